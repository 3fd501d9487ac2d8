"""Data layer of the forecasting app: benchmarks and users' CSVs on the Informer/Autoformer/PatchTST protocol.

* :mod:`~.sources`: :func:`load_series` (a registered benchmark by name, or a CSV by path),
  :data:`BENCHMARKS` (``etth1``, ``ettm1``, ``exchange_rate``, ``weather``);
* :mod:`~.table`: :class:`SeriesTable` and the generic CSV loader :func:`read_series_csv`, with
  :mod:`~.csvio` (reading, gzip), :mod:`~.dates` (timestamps), :mod:`~.spacing` (order, duplicates,
  step) and :mod:`~.fill` (missing-value policies) behind it;
* :mod:`~.splits`: :func:`protocol_borders` / :class:`SplitSpec` (``ett_hour``, ``ett_minute``, ``custom``);
* :mod:`~.scaling`: :class:`StandardScaler` fitted on training rows;
* :mod:`~.timefeatures`: calendar features (``timeenc`` 0/1);
* :mod:`~.windows`: :class:`ForecastWindowDataset` (``x``, ``y``, ``x_mark``, ``y_mark``);
* :mod:`~.module`: :class:`ForecastDataModule` (LightningDataModule).

Every problem with the input is a :class:`SeriesError` (a ``ValueError``) naming the file, row, line,
column and value; nothing is dropped or filled unless an option says so. The ``Literal`` type aliases
(``Features``, ``FillPolicy``, ``SplitProtocol``) live in their modules.
"""

from longseq.apps.timeseries.data.errors import SeriesError
from longseq.apps.timeseries.data.fill import FILL_POLICIES, MISSING_TOKENS, fill_missing
from longseq.apps.timeseries.data.module import ForecastDataModule
from longseq.apps.timeseries.data.scaling import StandardScaler
from longseq.apps.timeseries.data.sources import BENCHMARKS, Benchmark, benchmark_spec, load_benchmark, load_series
from longseq.apps.timeseries.data.spacing import Irregularity, Spacing, check_timestamps
from longseq.apps.timeseries.data.splits import SPLITS, SplitBorders, SplitSpec, protocol_borders
from longseq.apps.timeseries.data.table import SeriesTable, read_series_csv
from longseq.apps.timeseries.data.timefeatures import n_time_features, time_features
from longseq.apps.timeseries.data.windows import ForecastWindowDataset

__all__ = [
    "BENCHMARKS",
    "FILL_POLICIES",
    "MISSING_TOKENS",
    "SPLITS",
    "Benchmark",
    "ForecastDataModule",
    "ForecastWindowDataset",
    "Irregularity",
    "SeriesError",
    "SeriesTable",
    "Spacing",
    "SplitBorders",
    "SplitSpec",
    "StandardScaler",
    "benchmark_spec",
    "check_timestamps",
    "fill_missing",
    "load_benchmark",
    "load_series",
    "n_time_features",
    "protocol_borders",
    "read_series_csv",
    "time_features",
]
