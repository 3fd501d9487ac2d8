"""Forecasting models, each registered in :mod:`longseq.core.registry` (``create_model("patchtst", ...)``).

=============  ==========================  =========================================================
name           class / config              what
=============  ==========================  =========================================================
``dlinear``    DLinear / DLinearConfig     moving-average decomposition + linear layers
``patchtst``   PatchTST / PatchTSTConfig   patches, channel independence, RevIN, Transformer (core attention)
``informer``   Informer / InformerConfig   ProbSparse encoder with distilling, generative decoder
``s_mamba``    SMamba / SMambaConfig       variate tokens mixed by bidirectional core Mamba/Mamba2
=============  ==========================  =========================================================

All share :class:`Forecaster` (``model(x, x_mark, y_mark) -> (B, H, n_outputs)``) and the one
:class:`RevIN` module. :data:`FORECASTERS` maps each registered name to its class.
"""

from longseq.apps.timeseries.models.base import Forecaster, ForecasterConfig
from longseq.apps.timeseries.models.dlinear import DLinear, DLinearConfig, SeriesDecomposition
from longseq.apps.timeseries.models.embed import DataEmbedding
from longseq.apps.timeseries.models.informer import DistillingLayer, Informer, InformerConfig
from longseq.apps.timeseries.models.patchtst import PatchTST, PatchTSTConfig, patch_count, patchify
from longseq.apps.timeseries.models.revin import RevIN, RevINStats
from longseq.apps.timeseries.models.smamba import SMamba, SMambaConfig

#: Registered model name -> class.
FORECASTERS: dict[str, type[Forecaster]] = {
    "dlinear": DLinear,
    "patchtst": PatchTST,
    "informer": Informer,
    "s_mamba": SMamba,
}

__all__ = [
    "FORECASTERS",
    "DLinear",
    "DLinearConfig",
    "DataEmbedding",
    "DistillingLayer",
    "Forecaster",
    "ForecasterConfig",
    "Informer",
    "InformerConfig",
    "PatchTST",
    "PatchTSTConfig",
    "RevIN",
    "RevINStats",
    "SMamba",
    "SMambaConfig",
    "SeriesDecomposition",
    "patch_count",
    "patchify",
]
