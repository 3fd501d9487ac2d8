"""longseq.apps.timeseries: long-horizon forecasting (ETT, Weather, Exchange and users' CSVs).

Data layer (this package so far), in :mod:`longseq.apps.timeseries.data`: the benchmarks and a generic
CSV loader, the reference train/val/test protocol with training-only z-scoring, calendar features,
forecast windows and :class:`ForecastDataModule`. Models and the command line come later.
"""

from longseq.apps.timeseries.data import (
    BENCHMARKS,
    ForecastDataModule,
    ForecastWindowDataset,
    SeriesError,
    SeriesTable,
    SplitSpec,
    StandardScaler,
    load_series,
    protocol_borders,
    read_series_csv,
    time_features,
)

__all__ = [
    "BENCHMARKS",
    "ForecastDataModule",
    "ForecastWindowDataset",
    "SeriesError",
    "SeriesTable",
    "SplitSpec",
    "StandardScaler",
    "load_series",
    "protocol_borders",
    "read_series_csv",
    "time_features",
]
