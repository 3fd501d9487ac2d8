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


def _cli(config: str, overrides: list[str]) -> GenomicsCLI:
    # no progress bar: the log of a batch run stays readable
    return GenomicsCLI(args=["--config", str(config_path(config)), *overrides], run=False, trainer_defaults={})


def _metrics(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(v) for r in results for k, v in r.items()}


def pretrain(context: int, workdir: Path, max_time: str, tokens_per_batch: int, backbone: str) -> dict[str, Any]:
    """Pretrain ``backbone`` on E. coli with windows of ``context``; the held-out bits/base."""
    root = workdir / f"pretrain_{backbone}_{context}"
    batch = max(1, tokens_per_batch // context)
    cli = _cli(
        "pretrain_ecoli_hyena_1k.yaml",
        [
            f"--data.init_args.window={context}",
            f"--data.init_args.batch_size={batch}",
            f"--model.init_args.backbone={backbone}",
            f'--model.init_args.backbone_kwargs={{"max_len": {context}}}',
            f"--trainer.max_time={max_time}",
            f"--trainer.default_root_dir={root}",
            f"--trainer.logger.init_args.save_dir={root}",
        ],
    )
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
    overrides = [
        f"--model.init_args.backbone={backbone}",
        f'--model.init_args.backbone_kwargs={{"max_len": {max_len}}}',
        f"--trainer.max_time={max_time}",
        f"--trainer.default_root_dir={root}",
        f"--trainer.logger.init_args.save_dir={root}",
    ]
    if pretrained is not None:
        overrides.append(f"--model.init_args.pretrained={pretrained}")
    cli = _cli("finetune_ienhancer.yaml", overrides)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    test = _metrics(cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best", verbose=False))
    return {"init": name, "epochs": cli.trainer.current_epoch, **{k: round(v, 4) for k, v in test.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--backbone", default="hyena_dna_tiny")
    parser.add_argument("--tokens-per-batch", type=int, default=65536)
    parser.add_argument("--pretrain-time", default="00:00:02:30", help="per context (DD:HH:MM:SS)")
    parser.add_argument("--finetune-time", default="00:00:01:30", help="per fine-tuning run")
    parser.add_argument("--skip-finetune", action="store_true", help="pretraining only")
    parser.add_argument("--workdir", default="runs/genomics_results")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--tag", default=None, help="file name suffix; {slug} is the GPU's slug (default: {slug})")
    args = parser.parse_args(argv)
    torch.set_float32_matmul_precision("high")
    work = Path(args.workdir)
    info = device_info()
    pre = [pretrain(c, work, args.pretrain_time, args.tokens_per_batch, args.backbone) for c in args.contexts]
    fine = []
    if not args.skip_finetune:
        fine.append(finetune(work, args.finetune_time, None, args.backbone, 1024))
        start = next((p for p in pre if p["context"] == 1024), pre[0])
        fine.append(finetune(work, args.finetune_time, start["pretrained"], args.backbone, start["context"]))
    payload = {"name": "genomics", "device": info, "pretrain": pre, "ienhancer": fine, "args": vars(args)}
    tag = (args.tag or "{slug}").format(slug=info.get("slug", "device"))
    out = Path(args.out) / f"genomics-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    return payload


if __name__ == "__main__":
    main()
