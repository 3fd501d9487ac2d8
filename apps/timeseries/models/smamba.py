"""S-Mamba (Wang et al., "Is Mamba Effective for Time Series Forecasting?", 2024): Mamba over variates.

Each channel's whole look-back is one token (iTransformer's inverted embedding: a linear map
L -> d_model; the calendar features, when given, become extra tokens); ``e_layers`` layers mix the
variate tokens with a bidirectional pair of longseq mixers (``mamba`` or ``mamba2``, one reading the
tokens forwards and one backwards, outputs summed) followed by a feed-forward, post-norm; a linear
map d_model -> H projects every variate token to its forecast. Windows are normalised with
:class:`~longseq.apps.timeseries.models.revin.RevIN` (``affine=False``, the paper's ``use_norm``).

On CPU the mixers run their PyTorch reference scans; on CUDA the longseq Triton kernels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from longseq.apps.timeseries.models.base import Forecaster, ForecasterConfig
from longseq.apps.timeseries.models.revin import RevIN
from longseq.core.registry import create_mixer, register_model

__all__ = ["SMamba", "SMambaConfig", "SMambaLayer", "s_mamba"]


class SMambaLayer(nn.Module):
    """``x = norm1(x + fwd(x) + flip(bwd(flip(x))))``; ``x = norm2(x + ff(x))`` over variate tokens (B, N, D)."""

    def __init__(self, cfg: SMambaConfig) -> None:
        super().__init__()
        kwargs = {**cfg.mixer_defaults(), **cfg.mixer_kwargs}
        self.forward_mixer = create_mixer(cfg.mixer, dim=cfg.d_model, **kwargs)
        self.backward_mixer = create_mixer(cfg.mixer, dim=cfg.d_model, **kwargs)
        self.ff1 = nn.Linear(cfg.d_model, cfg.d_ff)
        self.ff2 = nn.Linear(cfg.d_ff, cfg.d_model)
        self.act = F.gelu if cfg.activation == "gelu" else F.relu
        self.drop = nn.Dropout(cfg.dropout)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.forward_mixer(x) + self.backward_mixer(x.flip(1)).flip(1)  # (B, N, D)
        x = self.norm1(x + mixed)
        y = self.drop(self.ff2(self.drop(self.act(self.ff1(x)))))
        return self.norm2(x + y)


@dataclass
class SMambaConfig(ForecasterConfig):
    """S-Mamba options; defaults are the official ETTh1 script (look-back 96).

    Attributes:
        d_model, d_ff, e_layers: token width, feed-forward width, layers.
        mixer: ``"mamba"`` (the paper) or ``"mamba2"``.
        d_state: SSM state size.
        d_conv, expand: the mixers' convolution width and expansion (the paper: 2 and 1).
        mixer_kwargs: further options of the mixer (e.g. ``{"headdim": 32}`` for mamba2).
        dropout: embedding and feed-forward dropout.
        activation: feed-forward activation.
        use_time_features: add one token per calendar feature (the paper's default).
        n_time_features: F, columns of the marks.
        revin: per-window normalisation (``use_norm``).
    """

    d_model: int = 256
    d_ff: int = 256
    e_layers: int = 2
    mixer: Literal["mamba", "mamba2"] = "mamba"
    d_state: int = 2
    d_conv: int = 2
    expand: int = 1
    mixer_kwargs: dict[str, Any] = field(default_factory=dict)
    dropout: float = 0.1
    activation: Literal["gelu", "relu"] = "gelu"
    use_time_features: bool = True
    n_time_features: int = 4
    revin: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mixer not in ("mamba", "mamba2"):
            raise ValueError(f"mixer must be 'mamba' or 'mamba2', got {self.mixer!r}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {self.activation!r}")
        clash = sorted({"dim", *self.mixer_defaults()} & set(self.mixer_kwargs))
        if clash:
            raise ValueError(f"mixer_kwargs must not set {clash}: they are fields of the config")
        if self.e_layers < 1 or self.d_model < 1 or self.d_ff < 1 or self.n_time_features < 0:
            raise ValueError("e_layers, d_model and d_ff must be >= 1 and n_time_features >= 0")

    def mixer_defaults(self) -> dict[str, Any]:
        """The mixer options this config sets."""
        return {"d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand}


class SMamba(Forecaster):
    """Variate-token Mamba forecaster; output (B, H, C)."""

    config_class = SMambaConfig

    @property
    def uses_x_mark(self) -> bool:  # type: ignore[override]
        """True when the calendar features are extra tokens."""
        return self.config.use_time_features and self.config.n_time_features > 0

    def __init__(self, config: SMambaConfig | None = None) -> None:
        config = SMambaConfig() if config is None else config
        super().__init__(config)
        cfg = config
        self.revin = RevIN(cfg.enc_in, affine=False) if cfg.revin else None
        self.embed = nn.Linear(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(SMambaLayer(cfg) for _ in range(cfg.e_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.projector = nn.Linear(cfg.d_model, cfg.pred_len)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        C = x.shape[-1]
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        tokens = x.transpose(1, 2)  # (B, C, L): one token per variate
        if self.uses_x_mark:
            if x_mark.shape[-1] != cfg.n_time_features:
                raise ValueError(
                    f"x_mark must have n_time_features={cfg.n_time_features} columns, got {tuple(x_mark.shape)}"
                )
            tokens = torch.cat([tokens, x_mark.transpose(1, 2)], dim=1)  # (B, C + F, L)
        h = self.drop(self.embed(tokens))  # (B, N, D)
        for layer in self.layers:
            h = layer(h)
        y = self.projector(self.norm(h))[:, :C].transpose(1, 2)  # (B, H, C): calendar tokens dropped
        return self.revin.denormalize(y, stats) if stats is not None else y


@register_model
def s_mamba(**overrides) -> SMamba:
    """S-Mamba with :class:`SMambaConfig` defaults; keyword ``overrides`` set config fields."""
    return SMamba(SMambaConfig(**overrides))
