"""DLinear (Zeng et al., "Are Transformers Effective for Time Series Forecasting?", AAAI 2023).

The look-back is split by a moving average into trend and seasonal parts (:class:`SeriesDecomposition`,
kernel 25, the ends padded by repeating the first/last value so the trend keeps length L); one linear
layer L -> H maps each part, shared by all channels or one per channel (``individual``); the forecast
is their sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from longseq.apps.timeseries.models.base import Forecaster, ForecasterConfig
from longseq.core.registry import register_model

__all__ = ["DLinear", "DLinearConfig", "SeriesDecomposition", "dlinear"]


class SeriesDecomposition(nn.Module):
    """``x = trend + seasonal`` with ``trend`` the moving average of ``x`` (B, L, C) over L.

    Args:
        kernel_size: odd window of the moving average; the series is padded with ``(k - 1) / 2``
            copies of its first and last value at each end (stride 1), as in the reference code.
    """

    def __init__(self, kernel_size: int = 25) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"moving-average kernel_size must be odd and >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.pool = nn.AvgPool1d(kernel_size, stride=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(seasonal, trend)``, both (B, L, C)."""
        pad = (self.kernel_size - 1) // 2
        padded = torch.cat([x[:, :1].expand(-1, pad, -1), x, x[:, -1:].expand(-1, pad, -1)], dim=1)  # (B, L+2p, C)
        trend = self.pool(padded.transpose(1, 2)).transpose(1, 2)  # (B, L, C)
        return x - trend, trend


@dataclass
class DLinearConfig(ForecasterConfig):
    """DLinear options (defaults: the official scripts).

    Attributes:
        moving_avg: kernel of the trend's moving average (odd).
        individual: one pair of linear layers per channel instead of one shared pair.
        init: ``"average"`` starts each weight at ``1 / seq_len`` (Time-Series-Library's DLinear);
            ``"default"`` keeps PyTorch's init (the original LTSF-Linear code).
    """

    moving_avg: int = 25
    individual: bool = False
    init: Literal["average", "default"] = "default"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.moving_avg < 1 or self.moving_avg % 2 == 0:
            raise ValueError(f"moving_avg must be odd and >= 1, got {self.moving_avg}")
        if self.init not in ("average", "default"):
            raise ValueError(f"init must be 'average' or 'default', got {self.init!r}")


class DLinear(Forecaster):
    """Decomposition + linear forecaster; output (B, H, C)."""

    config_class = DLinearConfig

    def __init__(self, config: DLinearConfig | None = None) -> None:
        config = DLinearConfig() if config is None else config
        super().__init__(config)
        L, H, C = config.seq_len, config.pred_len, config.enc_in
        self.decomposition = SeriesDecomposition(config.moving_avg)
        n = C if config.individual else 1
        self.seasonal = nn.ModuleList(nn.Linear(L, H) for _ in range(n))
        self.trend = nn.ModuleList(nn.Linear(L, H) for _ in range(n))
        if config.init == "average":
            with torch.no_grad():
                for layer in (*self.seasonal, *self.trend):
                    layer.weight.fill_(1.0 / L)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        seasonal, trend = self.decomposition(x)  # (B, L, C) each
        seasonal, trend = seasonal.transpose(1, 2), trend.transpose(1, 2)  # (B, C, L)
        if self.config.individual:
            out = torch.stack(
                [s(seasonal[:, c]) + t(trend[:, c]) for c, (s, t) in enumerate(zip(self.seasonal, self.trend))], dim=1
            )  # (B, C, H)
        else:
            out = self.seasonal[0](seasonal) + self.trend[0](trend)  # (B, C, H)
        return out.transpose(1, 2)  # (B, H, C)


@register_model
def dlinear(**overrides) -> DLinear:
    """DLinear with :class:`DLinearConfig` defaults; keyword ``overrides`` set config fields."""
    return DLinear(DLinearConfig(**overrides))
