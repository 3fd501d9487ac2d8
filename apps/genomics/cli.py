"""``longseq-genomics``: training with LightningCLI, inference pipelines with argparse.

Training (``fit``, ``validate``, ``test``, ``predict``; all LightningCLI options, e.g.
``--trainer.devices 4 --trainer.strategy ddp``)::

    longseq-genomics fit --config demo.yaml            # a packaged config name or a path
    longseq-genomics fit --model CausalLMModule --model.backbone hyena_dna_tiny --data GenomeLMDataModule

Inference on FASTA files (dispatched before LightningCLI)::

    longseq-genomics score    --checkpoint runs/demo/pretrained --fasta x.fa --out out/x
    longseq-genomics embed    --checkpoint ... --fasta x.fa --out out/x.npz
    longseq-genomics classify --checkpoint ... --fasta x.fa --out out/x.tsv

``--config NAME.yaml`` without a folder that does not exist as a file is looked up among the packaged
configs (:func:`config_path`); ``longseq-genomics configs`` lists them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningCLI

from longseq.apps.genomics.alphabet import SequenceError
from longseq.apps.genomics.module import GenomicsModule
from longseq.apps.genomics.pipeline import (
    GenomicsPipeline,
    write_class_probabilities,
    write_embeddings,
    write_scores,
)

__all__ = ["CONFIG_DIR", "GenomicsCLI", "config_path", "main", "run_pipeline"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PIPELINES = ("embed", "score", "classify")


def config_path(name: str) -> Path:
    """The packaged config ``name`` (with or without ``.yaml``); ``FileNotFoundError`` lists them."""
    path = CONFIG_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"no packaged config {name!r}; available: {', '.join(known)}")
    return path


def _resolve_configs(args: list[str]) -> list[str]:
    """Replace ``--config NAME`` by the packaged file when ``NAME`` is not an existing path."""
    out = list(args)
    for i, arg in enumerate(out):
        value, prefix = None, ""
        if arg in ("--config", "-c") and i + 1 < len(out):
            value, index = out[i + 1], i + 1
        elif arg.startswith("--config="):
            value, index, prefix = arg.split("=", 1)[1], i, "--config="
        if value is not None and not Path(value).exists() and "/" not in value and value.endswith(".yaml"):
            out[index] = prefix + str(config_path(value))
    return out


class GenomicsCLI(LightningCLI):
    """LightningCLI over the genomics modules (``subclass_mode``: ``CausalLMModule`` or
    ``ClassificationModule``; ``GenomeLMDataModule`` or ``SequenceClassificationDataModule``) with
    the Rich progress bar."""

    def __init__(self, args: Sequence[str] | None = None, **kwargs) -> None:
        import longseq.apps.genomics  # noqa: F401  (imports the classes so short names resolve)

        kwargs.setdefault("trainer_defaults", {"callbacks": [RichProgressBar()]})
        super().__init__(
            GenomicsModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=args,
            **kwargs,
        )


def _pipeline_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longseq-genomics", description="Inference on FASTA files.")
    sub = parser.add_subparsers(dest="command", required=True)
    help_text = {
        "embed": "per-sequence embeddings (mean of per-base features) -> .npz",
        "score": "per-base log-likelihood -> PREFIX.per_base.tsv, PREFIX.bedGraph, PREFIX.summary.tsv",
        "classify": "class probabilities -> .tsv",
    }
    for name in PIPELINES:
        p = sub.add_parser(name, help=help_text[name], description=help_text[name])
        p.add_argument("--checkpoint", required=True, help="save_pretrained folder or Lightning .ckpt")
        p.add_argument("--fasta", required=True, help="FASTA/FASTQ file (optionally gzip)")
        p.add_argument("--out", required=True, help="output file (score: output prefix)")
        p.add_argument("--window", type=int, default=None, help="window length (default: the model's context)")
        p.add_argument("--overlap", type=int, default=None, help="overlap of consecutive windows (default window/4)")
        p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass")
        p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when available)")
        p.add_argument("--on-short", choices=("error", "skip"), default="error", help="sequences too short")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "classify":
            p.add_argument("--rc-average", action="store_true", help="average both strands' probabilities")
    return parser


def run_pipeline(argv: Sequence[str]) -> dict[str, Path]:
    """Run ``embed|score|classify`` with command-line ``argv``; returns the files written."""
    args = _pipeline_parser().parse_args(list(argv))
    pipe = GenomicsPipeline(
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        window=args.window,
        overlap=args.overlap,
        progress=not args.no_progress,
    )
    records = pipe.read(args.fasta)
    if args.command == "embed":
        ids, emb = pipe.embed(records, on_short=args.on_short)
        written = {"embeddings": write_embeddings(args.out, ids, emb)}
    elif args.command == "score":
        written = write_scores(args.out, pipe.score(records, on_short=args.on_short))
    else:
        ids, probs = pipe.classify(records, on_short=args.on_short, rc_average=args.rc_average)
        written = {"probabilities": write_class_probabilities(args.out, ids, probs, pipe.class_names)}
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``longseq-genomics``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in PIPELINES:
        try:
            run_pipeline(args)
        except (SequenceError, FileNotFoundError, ValueError) as exc:
            print(f"longseq-genomics {args[0]}: error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    if args and args[0] == "quickstart":
        from longseq.apps.genomics.quickstart import main as quickstart

        quickstart(args[1:])
        return
    if args and args[0] == "configs":
        for path in sorted(CONFIG_DIR.glob("*.yaml")):
            print(path)
        return
    GenomicsCLI(args=_resolve_configs(args))


if __name__ == "__main__":
    main()
