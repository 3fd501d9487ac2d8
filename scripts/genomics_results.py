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


def pretrain(context: int, workdir: Path, max_time: str, tokens_per_batch: int, backbone: str) -> dict[str, Any]:
    """Pretrain ``backbone`` on E. coli with windows of ``context``; the held-out bits/base."""
    root = workdir / f"pretrain_{backbone}_{context}"
    batch = max(1, tokens_per_batch // context)
    cli = _cli(
        "pretrain_ecoli_hyena_1k.yaml", root, backbone, context, max_time,
        f"--data.init_args.window={context}", f"--data.init_args.batch_size={batch}",
    )  # fmt: skip
    t0 = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    seconds = time.perf_counter() - t0
    val = _metrics(cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False))
    return {
        "backbone": backbone,
        "context": context,
        "batch_size": batch,
        "steps": cli.trainer.global_step,
        "train_seconds": round(seconds, 1),
        "val_bits_per_base": val.get("val/bpb"),
        "val_perplexity": val.get("val/ppl"),
        "pretrained": str(root / "pretrained"),
    }


def finetune(workdir: Path, max_time: str, pretrained: str | None, backbone: str, max_len: int) -> dict[str, Any]:
    """Fine-tune on iEnhancer layer 1; accuracy / MCC / AUROC on the independent test set."""
    name = "scratch" if pretrained is None else "pretrained"
    root = workdir / f"ienhancer_{name}"
    start = () if pretrained is None else (f"--model.init_args.pretrained={pretrained}",)
    cli = _cli("finetune_ienhancer.yaml", root, backbone, max_len, max_time, *start)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    test = _metrics(cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False))
    return {"init": name, "epochs": cli.trainer.current_epoch, **{k: round(v, 4) for k, v in test.items()}}


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
    parser.add_argument("--skip-finetune", action="store_true", help="no iEnhancer fine-tuning")
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
                pretrain(context, work, args.pretrain_time, args.tokens_per_batch, args.backbone)
            )
            save()
    if not args.skip_finetune:
        payload["ienhancer"].append(finetune(work, args.finetune_time, None, args.backbone, 1024))
        save()
        if pre := payload["pretrain"]:
            start = next((p for p in pre if p["context"] == 1024), pre[0])
            payload["ienhancer"].append(
                finetune(work, args.finetune_time, start["pretrained"], args.backbone, start["context"])
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
