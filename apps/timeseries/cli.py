"""``longseq-timeseries``: train, evaluate and use forecasters.

* ``fit | validate | test | predict``: :class:`~lightning.pytorch.cli.LightningCLI` over
  :class:`~longseq.apps.timeseries.module.ForecastModule` and
  :class:`~longseq.apps.timeseries.data.ForecastDataModule` (Rich progress bar; ``--trainer.devices``,
  ``--trainer.strategy`` etc. as Lightning provides; ``--data.features`` is linked to the module)::

      longseq-timeseries fit --config apps/timeseries/configs/patchtst_etth1_336_96.yaml
      longseq-timeseries test --config ... --ckpt_path best.ckpt

* ``forecast``: forecast the steps after a CSV with a trained checkpoint, writing a CSV and a PNG::

      longseq-timeseries forecast --ckpt best.ckpt --csv new.csv --horizon 96 --out forecast.csv [--holdout]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from longseq.apps.timeseries.data import ForecastDataModule, SeriesError
from longseq.apps.timeseries.module import ForecastModule
from longseq.apps.timeseries.pipeline import ForecastPipeline

__all__ = ["ForecastCLI", "forecast_main", "main"]


class ForecastCLI(LightningCLI):
    """LightningCLI with ``data.features`` linked to ``model.features``."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.features", "model.features")


def build_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> ForecastCLI:
    """The LightningCLI (``run=False`` parses and instantiates without running a subcommand)."""
    return ForecastCLI(
        ForecastModule,
        ForecastDataModule,
        trainer_defaults={"callbacks": [RichProgressBar()]},
        args=None if args is None else list(args),
        run=run,
        save_config_kwargs={"overwrite": True},
        **kwargs,
    )


def _forecast_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longseq-timeseries forecast",
        description="Forecast the steps after a CSV series with a trained checkpoint; writes a CSV and a PNG.",
    )
    parser.add_argument("--ckpt", required=True, help="ForecastModule .ckpt or save_pretrained file")
    parser.add_argument("--csv", required=True, help="the series: a date column and the training columns")
    parser.add_argument("--horizon", type=int, default=None, help="steps to forecast (default: the model's pred_len)")
    parser.add_argument("--out", required=True, help="output CSV; the PNG goes beside it (same name, .png)")
    parser.add_argument("--holdout", action="store_true", help="hide the last HORIZON rows and compare with them")
    parser.add_argument("--date-column", default="date", help="timestamp column (default: date)")
    parser.add_argument("--date-format", default=None, help="strptime format of the timestamps")
    parser.add_argument("--png", default=None, help="PNG path (default: OUT with .png)")
    return parser


def forecast_main(argv: Sequence[str]) -> int:
    """The ``forecast`` subcommand; returns the exit status (2 with a message on bad input)."""
    parser = _forecast_parser()
    args = parser.parse_args(list(argv))
    try:
        pipeline = ForecastPipeline.from_pretrained(args.ckpt)
        result = pipeline(
            args.csv, args.horizon, holdout=args.holdout, date_column=args.date_column, date_format=args.date_format
        )
    except (SeriesError, ValueError, FileNotFoundError) as exc:
        parser.exit(2, f"longseq-timeseries forecast: error: {exc}\n")
    out = result.write_csv(args.out)
    png = result.plot(args.png or Path(args.out).with_suffix(".png"))
    print(f"wrote {out} ({len(result.values)} rows) and {png}")
    for name, value in result.metrics().items():
        print(f"{name} (original units): {value:.6g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int | None:
    """Console entry point: ``forecast`` is handled here, everything else by LightningCLI."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "forecast":
        return forecast_main(argv[1:])
    build_cli(argv)
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
