"""Cross-check of the held-out bits/base of a pretrained genomics LM: the trainer's ``validate`` against a
plain loop over the same validation loader (``scripts/genomics_results.bits_by_position``), each with
the long convolutions on the Triton kernels and on the ``torch.fft`` reference. All four must agree;
prints one JSON object::

    python scripts/genomics_eval_check.py PRETRAINED_DIR --context 1024 [--accelerator gpu]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genomics_results as gr  # noqa: E402

import longseq.kernels.fftconv as fftconv_mod  # noqa: E402


def _validate(pretrained: str, context: int, accelerator: str, root: Path) -> tuple[float, float]:
    cli = gr._cli(
        "pretrain_ecoli_hyena_1k.yaml", root, "hyena_dna_tiny", context, "00:00:10:00",
        f"--model.init_args.pretrained={pretrained}", f"--data.init_args.window={context}",
        f"--data.init_args.batch_size={max(1, 65536 // context)}", f"--trainer.accelerator={accelerator}",
    )  # fmt: skip
    val = gr._metrics(cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False))
    loop = gr._overall(gr.bits_by_position(cli.model, cli.datamodule.val_dataloader(), context))
    return round(val["val/bpb"], 4), loop


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pretrained")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--workdir", default="runs/genomics_eval_check")
    args = parser.parse_args(argv)
    out: dict[str, float] = {}
    out["trainer_triton"], out["loop_triton"] = _validate(
        args.pretrained, args.context, args.accelerator, Path(args.workdir)
    )
    real = fftconv_mod.use_triton
    fftconv_mod.use_triton = lambda t: False  # the torch.fft reference path
    try:
        out["trainer_torch"], out["loop_torch"] = _validate(
            args.pretrained, args.context, args.accelerator, Path(args.workdir)
        )
    finally:
        fftconv_mod.use_triton = real
    out["nats_to_bits"] = round(1 / math.log(2), 6)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
