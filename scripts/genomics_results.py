"""Genomics results on one GPU: E. coli pretraining at several contexts, iEnhancer fine-tuning from
scratch and from the pretrained model. Writes ``<out>/genomics-<tag>.json`` (and prints it)::

    python scripts/genomics_results.py --contexts 1024 8192 --pretrain-time 00:00:02:30 \\
        --finetune-time 00:00:01:30 --tag h100

Every run goes through the same LightningCLI as ``longseq-genomics`` with the shipped configs
(``pretrain_ecoli_hyena_1k.yaml``, ``finetune_ienhancer.yaml``), overriding the window, the model's
context, the batch size (tokens per batch constant) and a wall-clock budget (``--trainer.max_time``).
The validation bits/base is measured after training on the held-out last 10% of the genome, with
windows of the training context; the Markov baseline comes from ``scripts/genomics_markov_baseline.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import device_info
from longseq.apps.genomics.cli import GenomicsCLI, config_path


def _cli(config: str, root: Path, backbone: str, max_len: int, max_time: str, *overrides: str) -> GenomicsCLI:
    """A shipped config with the run folder, backbone, context and time budget of this script, plus
    ``overrides``; no progress bar, so a batch run's log stays readable."""
    args = [
        "--config", str(config_path(config)),
        f"--model.init_args.backbone={backbone}",
        f'--model.init_args.backbone_kwargs={{"max_len": {max_len}}}',
        f"--trainer.max_time={max_time}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
        *overrides,
    ]  # fmt: skip
    return GenomicsCLI(args=args, run=False, trainer_defaults={})


def _metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(v) for r in results for k, v in r.items()}


#: Position bins (first position, end) within a held-out window for the bits/base-by-context curve.
POSITION_BINS = (0, 64, 256, 1024, 4096, 8192, 16384, 32768, 65536, 131072)


def bits_by_position(
    module: Any, loader: Any, context: int, *, bf16: bool = True, inference_mode: bool = False
) -> list[dict[str, float]]:
    """Held-out bits/base of the tokens at positions ``[lo, hi)`` of their window, per bin of
    :data:`POSITION_BINS` up to ``context``: a token at position ``p`` is predicted from ``p`` bases
    of context, so a falling curve means the model uses the longer context. ``bf16``: under bf16
    autocast, as the trainer's ``bf16-mixed``; ``inference_mode`` instead of ``no_grad``. The module runs
    where it is: move it back to the GPU first (Lightning leaves it on the CPU after ``fit``/``validate``)."""
    with torch.inference_mode() if inference_mode else torch.no_grad():
        return _bits_by_position(module, loader, context, bf16)


def _overall(bins: list[dict[str, float]]) -> float:
    return round(sum(b["tokens"] * b["bits_per_base"] for b in bins) / sum(b["tokens"] for b in bins), 4)


def _bits_by_position(module: Any, loader: Any, context: int, bf16: bool) -> list[dict[str, float]]:
    module.eval()
    edges = [b for b in POSITION_BINS if b < context] + [context]
    sums = torch.zeros(len(edges) - 1, dtype=torch.float64)
    counts = torch.zeros_like(sums)
    bins = None
    for batch in loader:
        batch = {k: v.to(module.device) for k, v in batch.items()}
        with torch.autocast(module.device.type, dtype=torch.bfloat16, enabled=bf16):
            nll, valid = module.token_nll(batch)  # (B, L) nats
        if bins is None or bins.numel() != nll.shape[1]:
            pos = torch.arange(nll.shape[1], device=nll.device)
            bins = torch.bucketize(pos, torch.tensor(edges[1:], device=nll.device), right=True)  # (L,)
        b = bins.expand_as(nll)[valid]
        sums += (
            torch.zeros(len(sums), device=nll.device, dtype=torch.float64).index_add_(0, b, nll[valid].double()).cpu()
        )
        counts += torch.bincount(b, minlength=len(sums)).double().cpu()
    return [
        {"from": lo, "to": hi, "tokens": int(n), "bits_per_base": round(float(s / n) / math.log(2), 4)}
        for lo, hi, s, n in zip(edges[:-1], edges[1:], sums, counts)
        if n > 0
    ]


def pretrain(
    context: int,
    workdir: Path,
    max_time: str,
    tokens_per_batch: int,
    backbone: str,
    max_steps: int | None,
    length_warmup: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Pretrain ``backbone`` on E. coli with windows of ``context``; the held-out bits/base, overall and
    by position in the window. ``max_steps`` fixes the number of steps (the same tokens for every
    context, the cosine schedule spanning them); ``max_time`` stays a safety limit. ``length_warmup``
    ``(start_window, epochs_per_stage)``: HyenaDNA's sequence-length warm-up
    (:class:`~longseq.apps.genomics.SequenceLengthWarmup`, tokens per batch constant)."""
    from longseq.apps.genomics import SequenceLengthWarmup

    root = workdir / f"pretrain_{backbone}_{context}"
    batch = max(1, tokens_per_batch // context)
    steps = () if max_steps is None else (f"--trainer.max_steps={max_steps}", "--trainer.max_epochs=-1")
    cli = _cli(
        "pretrain_ecoli_hyena_1k.yaml", root, backbone, context, max_time,
        f"--data.init_args.window={context}", f"--data.init_args.batch_size={batch}", *steps,
    )  # fmt: skip
    warm = length_warmup is not None and length_warmup[0] < context
    if warm:
        start, per_stage = length_warmup
        cli.trainer.callbacks.insert(0, SequenceLengthWarmup(start_window=start, epochs_per_stage=per_stage))
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - t0
    val = _metrics(cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False))
    cli.model.to(cli.trainer.strategy.root_device)  # the trainer's teardown left it on the CPU
    return {
        "backbone": backbone,
        "context": context,
        "batch_size": batch,
        "length_warmup": {"start_window": start, "epochs_per_stage": per_stage} if warm else None,
        "steps": cli.trainer.global_step,
        "tokens_seen": cli.trainer.global_step * batch * context,
        "train_seconds": round(seconds, 1),
        "val_bits_per_base": val.get("val/bpb"),
        "val_perplexity": val.get("val/ppl"),
        "val_bits_by_position": (bins := bits_by_position(cli.model, cli.datamodule.val_dataloader(), context)),
        # The same held-out tokens scored outside the trainer: bf16 (the trainer's precision) must equal
        # val_bits_per_base; fp32 shows how much the trained model depends on the precision.
        "val_bits_check": {
            "no_grad_bf16": _overall(bins),
            "inference_mode_bf16": _overall(
                bits_by_position(cli.model, cli.datamodule.val_dataloader(), context, inference_mode=True)
            ),
            "no_grad_fp32": _overall(bits_by_position(cli.model, cli.datamodule.val_dataloader(), context, bf16=False)),
        },
        "pretrained": str(root / "pretrained"),
    }


def _scores(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, MCC and AUROC of positive-class probabilities ``(N,)`` against labels ``(N,)``."""
    from torchmetrics.functional.classification import binary_accuracy, binary_auroc, binary_matthews_corrcoef

    return {
        "test/acc": round(float(binary_accuracy(probs, labels)), 4),
        "test/mcc": round(float(binary_matthews_corrcoef(probs, labels)), 4),
        "test/auroc": round(float(binary_auroc(probs, labels)), 4),
    }


def finetune(
    workdir: Path, max_time: str, pretrained: str | None, backbone: str, max_len: int, seeds: list[int], rc: bool
) -> dict[str, Any]:
    """Fine-tune on iEnhancer layer 1 once per seed (the checkpoint with the best validation MCC of
    each run is kept); accuracy / MCC / AUROC of each on the independent test set, and of the ensemble
    (the mean of the seeds' test probabilities), each scored on the given strand and strand-averaged
    (``rc_average``). ``rc`` picks the headline (declared before the run) and the validation scoring."""
    name = "scratch" if pretrained is None else "pretrained"
    start = () if pretrained is None else (f"--model.init_args.pretrained={pretrained}",)
    runs, probs, labels = [], {False: [], True: []}, None
    for seed in seeds:
        root = workdir / f"ienhancer_{name}_seed{seed}"
        cli = _cli(
            "finetune_ienhancer.yaml", root, backbone, max_len, max_time, *start,
            f"--seed_everything={seed}", f"--model.init_args.rc_average={rc}",
        )  # fmt: skip
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        loader = cli.datamodule.test_dataloader()  # sets up the test split
        y = torch.as_tensor(cli.datamodule.test_set.labels).long()
        if labels is not None and not torch.equal(labels, y):
            raise RuntimeError("the test set's labels differ between seeds; the ensemble would be wrong")
        labels = y
        run: dict[str, Any] = {"seed": seed, "epochs": cli.trainer.current_epoch}
        for strands in (False, True):  # the same trained model, evaluated on one strand and on both
            cli.model.hparams.rc_average = strands
            out = cli.trainer.predict(cli.model, loader, ckpt_path="best")
            p = torch.cat([o.float().cpu() for o in out])[:, 1]  # (N,) positive-class probability
            probs[strands].append(p)
            run["both_strands" if strands else "one_strand"] = _scores(p, y)
        runs.append(run)
    result: dict[str, Any] = {"init": name, "headline": "both_strands" if rc else "one_strand", "seeds": runs}
    for key, strands in (("one_strand", False), ("both_strands", True)):
        single = {k: [r[key][k] for r in runs] for k in ("test/acc", "test/mcc", "test/auroc")}
        result[key] = {
            "mean_of_seeds": {k: round(sum(v) / len(v), 4) for k, v in single.items()},
            "ensemble": {"members": len(seeds), **_scores(torch.stack(probs[strands]).mean(0), labels)},
        }
    return result


def crossval(workdir: Path, max_time: str, folds: int, epochs: int, backbone: str) -> dict[str, Any]:
    """k-fold cross-validation on human_nontata_promoters' available (official test) split: fold ``k``
    is held out, the model trains for a fixed number of epochs on the rest (no model selection on the
    held-out fold) and is scored on it once. Not the dataset's official train/test protocol."""
    per_fold = []
    for k in range(folds):
        root = workdir / f"promoters_fold{k}"
        cli = _cli(
            "finetune_ienhancer.yaml", root, backbone, 1024, max_time,
            "--data.init_args.source=human_nontata_promoters", f"--data.init_args.folds={folds}",
            f"--data.init_args.fold={k}", f"--trainer.max_epochs={epochs}",
        )  # fmt: skip
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        val = _metrics(cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False))
        per_fold.append(
            {"fold": k, "epochs": cli.trainer.current_epoch, **{key: round(v, 4) for key, v in val.items()}}
        )
    mean = {key: round(sum(f[key] for f in per_fold) / folds, 4) for key in ("val/acc", "val/mcc", "val/auroc")}
    protocol = (
        f"{folds}-fold stratified CV within the available (official test) split; fixed {epochs} epochs or "
        f"{max_time} per fold, the last model scored once on its held-out fold; not the official protocol"
    )
    return {"folds": per_fold, "mean": mean, "protocol": protocol}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--backbone", default="hyena_dna_tiny")
    parser.add_argument("--tokens-per-batch", type=int, default=65536)
    parser.add_argument("--pretrain-time", default="00:00:02:30", help="per context (DD:HH:MM:SS)")
    parser.add_argument("--finetune-time", default="00:00:01:30", help="per fine-tuning run")
    parser.add_argument("--max-steps", type=int, default=None, help="pretraining steps per context (same tokens)")
    parser.add_argument(
        "--length-warmup",
        type=int,
        nargs=2,
        default=None,
        metavar=("START_WINDOW", "EPOCHS_PER_STAGE"),
        help="HyenaDNA's sequence-length warm-up: windows of START_WINDOW doubled every EPOCHS_PER_STAGE epochs",
    )
    parser.add_argument("--skip-finetune", action="store_true", help="no iEnhancer fine-tuning")
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0], help="one fine-tuning run per seed")
    parser.add_argument(
        "--finetune-init", nargs="+", choices=["scratch", "pretrained"], default=["scratch", "pretrained"]
    )
    parser.add_argument("--rc-average", action="store_true", help="strand-averaged iEnhancer evaluation")
    parser.add_argument("--skip-pretrain", action="store_true", help="no pretraining (fine-tuning from scratch only)")
    parser.add_argument("--promoter-folds", type=int, default=0, help="k-fold CV on human_nontata_promoters (0: skip)")
    parser.add_argument("--promoter-epochs", type=int, default=10)
    parser.add_argument("--promoter-time", default="00:00:01:00", help="per fold")
    parser.add_argument("--workdir", default="runs/genomics_results")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default=None, help="file name suffix; {slug} is the GPU's slug (default: {slug})")
    args = parser.parse_args(argv)
    torch.set_float32_matmul_precision("high")
    work = Path(args.workdir)
    info = device_info()
    tag = (args.tag or "{slug}").format(slug=info.get("slug", "device"))
    out = Path(args.out) / f"genomics-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"name": "genomics", "device": info, "pretrain": [], "ienhancer": [], "args": vars(args)}

    def save() -> None:  # after every run, so a job stopped by a time limit keeps what it finished
        out.write_text(json.dumps(payload, indent=2) + "\n")

    if not args.skip_pretrain:
        for context in args.contexts:
            payload["pretrain"].append(
                pretrain(
                    context,
                    work,
                    args.pretrain_time,
                    args.tokens_per_batch,
                    args.backbone,
                    args.max_steps,
                    tuple(args.length_warmup) if args.length_warmup else None,
                )  # fmt: skip
            )
            save()
    if not args.skip_finetune:
        seeds, rc = args.finetune_seeds, args.rc_average
        if "scratch" in args.finetune_init:
            payload["ienhancer"].append(finetune(work, args.finetune_time, None, args.backbone, 1024, seeds, rc))
            save()
        if (pre := payload["pretrain"]) and "pretrained" in args.finetune_init:
            start = next((p for p in pre if p["context"] == 1024), pre[0])
            payload["ienhancer"].append(
                finetune(work, args.finetune_time, start["pretrained"], args.backbone, start["context"], seeds, rc)
            )
            save()
    if args.promoter_folds:
        payload["human_nontata_promoters_cv"] = crossval(
            work, args.promoter_time, args.promoter_folds, args.promoter_epochs, args.backbone
        )
    save()
    print(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
