"""Published long-horizon forecasting results (multivariate, ``features="M"``, normalised scale).

Each entry is ``(model, dataset, lookback, horizon) -> Published(mse, mae, source, checked)``.
``checked=True`` marks rows whose eight numbers were read, digit for digit, in a copy of the cited table
that the comment above the row names (repository, file, commit); ``checked=False`` marks numbers
transcribed from the cited tables without such a check: verify them against the paper before quoting them.

Copies of the tables read for the checks:

* ``[SMamba-tex]``: the LaTeX source of the S-Mamba paper (v3, Elsevier template) stored as
  ``README.md`` of ``yyyx6787/BEPN4DE`` (commit a474e914), tables "Full results of S-Mamba and baselines on
  ETT datasets" and "... on Electricity, Exchange, Weather and Solar-Energy datasets" (look-back 96). Its
  PatchTST / DLinear columns are the baselines it quotes from iTransformer ("The results of baselines are
  reported by liu2023itransformer").
* ``[PatchTSMixer-tab]``: ``ibm-granite/granite-tsfm`` ``tsfmhfdemos/neurips/app.py`` (commit 032d6877),
  ``table_source``: the PatchTSMixer paper's table (arXiv 2306.09364, the PatchTST authors' group) with the
  PatchTST/64, DLinear (look-back 336) and Informer (look-back 96) columns of PatchTST Table 3.

Sources:

* ``PatchTST-T3``: Nie et al., "A Time Series is Worth 64 Words", ICLR 2023, Table 3. PatchTST/64 uses
  look-back 512, PatchTST/42 look-back 336; the DLinear and Informer rows of that table are quoted from
  the DLinear paper (DLinear at look-back 336, Informer at 96).
* ``DLinear-T2``: Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023, Table 2
  (Informer with look-back 96; DLinear with look-back 336).
* ``iTransformer-T``: Liu et al., "iTransformer", ICLR 2024, full results table (every model at look-back 96;
  the reference for Time-Series-Library's look-back-96 leaderboard).
* ``SMamba-T``: Wang et al., "Is Mamba Effective for Time Series Forecasting?", 2024, main table (look-back 96).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PUBLISHED", "Published", "published_for"]


@dataclass(frozen=True)
class Published:
    """One published result."""

    mse: float
    mae: float | None
    source: str
    checked: bool = False


_H = (96, 192, 336, 720)


def _rows(model: str, dataset: str, lookback: int, source: str, mse, mae, checked=(False,) * 4):
    return {(model, dataset, lookback, h): Published(m, a, source, c) for h, m, a, c in zip(_H, mse, mae, checked)}


_ALL = (True,) * 4
PUBLISHED: dict[tuple[str, str, int, int], Published] = {
    # ---------------- look-back 512 / 336 (PatchTST paper protocol)
    # [PatchTSMixer-tab] PatchTST column, ETTH1 / ETTM1 / Weather rows.
    **_rows("patchtst", "etth1", 512, "PatchTST-T3 (PatchTST/64)",
            (0.370, 0.413, 0.422, 0.447), (0.400, 0.429, 0.440, 0.468), _ALL),
    **_rows("patchtst", "ettm1", 512, "PatchTST-T3 (PatchTST/64)",
            (0.293, 0.333, 0.369, 0.416), (0.346, 0.370, 0.392, 0.420), _ALL),
    **_rows("patchtst", "weather", 512, "PatchTST-T3 (PatchTST/64)",
            (0.149, 0.194, 0.245, 0.314), (0.198, 0.241, 0.282, 0.334), _ALL),
    # PatchTST/42: no citable copy of Table 3 found (unchecked).
    **_rows("patchtst", "etth1", 336, "PatchTST-T3 (PatchTST/42)",
            (0.375, 0.414, 0.431, 0.449), (0.399, 0.421, 0.436, 0.466)),
    **_rows("patchtst", "ettm1", 336, "PatchTST-T3 (PatchTST/42)",
            (0.290, 0.332, 0.366, 0.420), (0.342, 0.369, 0.392, 0.424)),
    **_rows("patchtst", "weather", 336, "PatchTST-T3 (PatchTST/42)",
            (0.152, 0.197, 0.249, 0.320), (0.199, 0.243, 0.283, 0.335)),
    # [PatchTSMixer-tab] DLinear column, ETTH1 / ETTM1 / Weather rows.
    **_rows("dlinear", "etth1", 336, "PatchTST-T3 / DLinear-T2",
            (0.375, 0.405, 0.439, 0.472), (0.399, 0.416, 0.443, 0.490), _ALL),
    **_rows("dlinear", "ettm1", 336, "PatchTST-T3 / DLinear-T2",
            (0.299, 0.335, 0.369, 0.425), (0.343, 0.365, 0.386, 0.421), _ALL),
    **_rows("dlinear", "weather", 336, "PatchTST-T3 / DLinear-T2",
            (0.176, 0.220, 0.265, 0.323), (0.237, 0.282, 0.319, 0.362), _ALL),
    # no citable copy found (unchecked).
    **_rows("dlinear", "exchange_rate", 336, "DLinear-T2",
            (0.081, 0.157, 0.305, 0.643), (0.203, 0.293, 0.414, 0.601)),
    # ---------------- look-back 96 (Time-Series-Library / iTransformer protocol)
    # [SMamba-tex] PatchTST and DLinear columns (iTransformer's baselines), ETTh1 / ETTm1 / Weather / Exchange.
    **_rows("patchtst", "etth1", 96, "iTransformer-T",
            (0.414, 0.460, 0.501, 0.500), (0.419, 0.445, 0.466, 0.488), _ALL),
    **_rows("patchtst", "ettm1", 96, "iTransformer-T",
            (0.329, 0.367, 0.399, 0.454), (0.367, 0.385, 0.410, 0.439), _ALL),
    **_rows("patchtst", "weather", 96, "iTransformer-T",
            (0.177, 0.225, 0.278, 0.354), (0.218, 0.259, 0.297, 0.348), _ALL),
    **_rows("patchtst", "exchange_rate", 96, "iTransformer-T",
            (0.088, 0.176, 0.301, 0.901), (0.205, 0.299, 0.397, 0.714), _ALL),
    **_rows("dlinear", "etth1", 96, "iTransformer-T",
            (0.386, 0.437, 0.481, 0.519), (0.400, 0.432, 0.459, 0.516), _ALL),
    **_rows("dlinear", "ettm1", 96, "iTransformer-T",
            (0.345, 0.380, 0.413, 0.474), (0.372, 0.389, 0.413, 0.453), _ALL),
    **_rows("dlinear", "weather", 96, "iTransformer-T",
            (0.196, 0.237, 0.283, 0.345), (0.255, 0.296, 0.335, 0.381), _ALL),
    **_rows("dlinear", "exchange_rate", 96, "iTransformer-T",
            (0.088, 0.176, 0.313, 0.839), (0.218, 0.315, 0.427, 0.695), _ALL),
    # [PatchTSMixer-tab] Informer column, ETTH1 / ETTM1 / Weather rows (Exchange: no citable copy, unchecked).
    # These are the Informer numbers of the Autoformer / DLinear tables (Informer's own training recipe), not a
    # run of Time-Series-Library's Informer script.
    **_rows("informer", "etth1", 96, "DLinear-T2",
            (0.865, 1.008, 1.107, 1.181), (0.713, 0.792, 0.809, 0.865), _ALL),
    **_rows("informer", "ettm1", 96, "DLinear-T2",
            (0.672, 0.795, 1.212, 1.166), (0.571, 0.669, 0.871, 0.823), _ALL),
    **_rows("informer", "weather", 96, "DLinear-T2",
            (0.300, 0.598, 0.578, 1.059), (0.384, 0.544, 0.523, 0.741), _ALL),
    **_rows("informer", "exchange_rate", 96, "DLinear-T2",
            (0.847, 1.204, 1.672, 2.478), (0.752, 0.895, 1.036, 1.310)),
    # [SMamba-tex] S-Mamba column, ETTh1 / ETTm1 / Weather / Exchange.
    **_rows("s_mamba", "etth1", 96, "SMamba-T",
            (0.386, 0.443, 0.489, 0.502), (0.405, 0.437, 0.468, 0.489), _ALL),
    **_rows("s_mamba", "ettm1", 96, "SMamba-T",
            (0.333, 0.376, 0.408, 0.475), (0.368, 0.390, 0.413, 0.448), _ALL),
    **_rows("s_mamba", "weather", 96, "SMamba-T",
            (0.165, 0.214, 0.274, 0.350), (0.210, 0.252, 0.297, 0.345), _ALL),
    **_rows("s_mamba", "exchange_rate", 96, "SMamba-T",
            (0.086, 0.182, 0.332, 0.867), (0.207, 0.304, 0.418, 0.703), _ALL),
}  # fmt: skip


def published_for(model: str, dataset: str, lookback: int, horizon: int) -> Published | None:
    """The published result of a run, or None."""
    return PUBLISHED.get((model, dataset, lookback, horizon))
