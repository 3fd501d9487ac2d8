"""Informer (Zhou et al., AAAI 2021) in the Time-Series-Library layout.

* Embedding: :class:`~longseq.apps.timeseries.models.embed.DataEmbedding` (value + position + calendar).
* Encoder: ``e_layers`` post-norm layers with ProbSparse self-attention (longseq's
  ``probsparse_attention`` mixer, :mod:`longseq.core.attention.probsparse`) and a position-wise
  feed-forward of kernel-1 convolutions; with ``distil``, a :class:`DistillingLayer` (conv 3 +
  BatchNorm + ELU + max-pool 3 stride 2) between layers halves the length each time (L -> ceil(L / 2)).
* Decoder ("generative style"): the input is the last ``label_len`` rows of the look-back (start
  tokens) followed by ``pred_len`` zeros, embedded with their calendar features; ``d_layers`` layers
  of causal ProbSparse self-attention, full cross-attention to the encoder output, feed-forward; a
  linear projection to ``c_out``. The forecast is the last ``pred_len`` rows, all produced in one pass.

The distilling convolution pads by 1 as the original Informer code does with PyTorch >= 1.5, so the
length is exactly halved (rounded up); Time-Series-Library pads by 2, giving ``L / 2 + 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from longseq.apps.timeseries.models.base import Forecaster, ForecasterConfig
from longseq.apps.timeseries.models.embed import DataEmbedding, EmbedType
from longseq.core.attention import Attention, attention
from longseq.core.registry import register_model

__all__ = ["CrossAttention", "DistillingLayer", "Informer", "InformerConfig", "informer"]


class CrossAttention(nn.Module):
    """Multi-head attention of queries ``x`` (B, Lq, D) over ``memory`` (B, Lk, D), full softmax, no positions."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, backend: str = "auto") -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"d_model {dim} must be divisible by n_heads {num_heads}")
        self.num_heads, self.backend, self.dropout = num_heads, backend, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        H = self.num_heads
        q = self.q(x).unflatten(-1, (H, -1))  # (B, Lq, H, Dh)
        k, v = (t.unflatten(-1, (H, -1)) for t in self.kv(memory).chunk(2, dim=-1))  # (B, Lk, H, Dh)
        p = self.dropout if self.training else 0.0
        return self.out(attention(q, k, v, dropout_p=p, backend=self.backend).flatten(-2))  # (B, Lq, D)


class _FeedForward(nn.Module):
    """``conv1(k=1) -> activation -> dropout -> conv2(k=1) -> dropout`` over (B, L, D)."""

    def __init__(self, dim: int, d_ff: int, dropout: float, activation: Literal["gelu", "relu"]) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(dim, d_ff, kernel_size=1)
        self.conv2 = nn.Conv1d(d_ff, dim, kernel_size=1)
        self.act = F.gelu if activation == "gelu" else F.relu
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.act(self.conv1(x.transpose(1, 2))))  # (B, d_ff, L)
        return self.drop(self.conv2(y).transpose(1, 2))  # (B, L, D)


class DistillingLayer(nn.Module):
    """Self-attention distilling: ``maxpool3/2(ELU(BatchNorm(conv3(x))))`` over time; (B, L, D) -> (B, ceil(L/2), D)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(dim)
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.elu(self.norm(self.conv(x.transpose(1, 2))))  # (B, D, L)
        return self.pool(y).transpose(1, 2)  # (B, ceil(L / 2), D)


class _EncoderLayer(nn.Module):
    def __init__(self, cfg: InformerConfig) -> None:
        super().__init__()
        self.attn = Attention(
            cfg.d_model, cfg.n_heads, variant="probsparse", factor=cfg.factor, positions="none", qkv_bias=True,
            out_bias=True,
        )  # fmt: skip
        self.ff = _FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        self.norm1, self.norm2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.attn(x)))
        return self.norm2(x + self.ff(x))


class _DecoderLayer(nn.Module):
    def __init__(self, cfg: InformerConfig) -> None:
        super().__init__()
        self.self_attn = Attention(
            cfg.d_model, cfg.n_heads, variant="probsparse", factor=cfg.factor, causal=True, positions="none",
            qkv_bias=True, out_bias=True,
        )  # fmt: skip
        self.cross_attn = CrossAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.attn_backend)
        self.ff = _FeedForward(cfg.d_model, cfg.d_ff, cfg.dropout, cfg.activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(cfg.d_model) for _ in range(3))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.drop(self.self_attn(x)))
        x = self.norm2(x + self.drop(self.cross_attn(x, memory)))
        return self.norm3(x + self.ff(x))


@dataclass
class InformerConfig(ForecasterConfig):
    """Informer options; defaults are Time-Series-Library's (and its ETTh1 script: factor 3 there, 5 in the paper).

    Attributes:
        label_len: decoder start tokens (the end of the look-back).
        dec_in: decoder input channels (the same series as the encoder's, so = ``enc_in``; kept for
            the reference's argument names and checked).
        c_out: output channels (C for ``M``; 1 for ``S``/``MS``).
        d_model, n_heads, e_layers, d_layers, d_ff: widths and depths.
        factor: ProbSparse sampling factor c (u = c ln L active queries).
        dropout: dropout of embeddings, attention outputs and feed-forwards.
        activation: feed-forward activation.
        distil: distilling layers between encoder layers.
        embed: calendar embedding (``timeF`` for ``timeenc=1`` marks, ``fixed``/``learned`` for ``timeenc=0``).
        n_time_features: F, columns of the marks (4 for hourly ``timeF``).
        attn_backend: backend of the cross-attention.
    """

    label_len: int = 48
    dec_in: int = 7
    c_out: int = 7
    d_model: int = 512
    n_heads: int = 8
    e_layers: int = 2
    d_layers: int = 1
    d_ff: int = 2048
    factor: float = 5.0
    dropout: float = 0.1
    activation: Literal["gelu", "relu"] = "gelu"
    distil: bool = True
    embed: EmbedType = "timeF"
    n_time_features: int = 4
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_len <= self.seq_len:
            raise ValueError(f"label_len must be in [0, seq_len={self.seq_len}], got {self.label_len}")
        if self.dec_in != self.enc_in:
            raise ValueError(
                f"dec_in ({self.dec_in}) must equal enc_in ({self.enc_in}): the start tokens are the look-back's rows"
            )
        if self.c_out not in (1, self.enc_in):
            raise ValueError(f"c_out must be enc_in ({self.enc_in}) or 1 (the target, last channel), got {self.c_out}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.e_layers < 1 or self.d_layers < 1 or self.factor <= 0:
            raise ValueError(
                f"need e_layers >= 1, d_layers >= 1, factor > 0, got {self.e_layers}, {self.d_layers}, {self.factor}"
            )
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {self.activation!r}")
        if self.n_time_features < 0:
            raise ValueError(f"n_time_features must be >= 0, got {self.n_time_features}")

    def encoder_lengths(self) -> list[int]:
        """Sequence length entering each encoder layer (halved, rounded up, by each distilling layer)."""
        lengths = [self.seq_len]
        for _ in range(self.e_layers - 1):
            lengths.append(math.ceil(lengths[-1] / 2) if self.distil else lengths[-1])
        return lengths


class Informer(Forecaster):
    """ProbSparse encoder-decoder; output (B, H, c_out)."""

    config_class = InformerConfig
    uses_x_mark = True
    uses_y_mark = True

    def __init__(self, config: InformerConfig | None = None) -> None:
        config = InformerConfig() if config is None else config
        super().__init__(config)
        cfg = config
        self.enc_embedding = DataEmbedding(cfg.enc_in, cfg.d_model, cfg.n_time_features, cfg.embed, cfg.dropout)
        self.dec_embedding = DataEmbedding(cfg.dec_in, cfg.d_model, cfg.n_time_features, cfg.embed, cfg.dropout)
        self.encoder = nn.ModuleList(_EncoderLayer(cfg) for _ in range(cfg.e_layers))
        self.distil = nn.ModuleList(DistillingLayer(cfg.d_model) for _ in range(cfg.e_layers - 1) if cfg.distil)
        self.enc_norm = nn.LayerNorm(cfg.d_model)
        self.decoder = nn.ModuleList(_DecoderLayer(cfg) for _ in range(cfg.d_layers))
        self.dec_norm = nn.LayerNorm(cfg.d_model)
        self.projection = nn.Linear(cfg.d_model, cfg.c_out)

    def encode(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        """Encoder output (B, L_last, d_model) with ``L_last = encoder_lengths()[-1]``."""
        h = self.enc_embedding(x, x_mark)
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i < len(self.distil):
                h = self.distil[i](h)
        return self.enc_norm(h)

    def decoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """Start tokens (the last ``label_len`` rows of ``x``) followed by ``pred_len`` zeros: (B, label_len + H, C)."""
        cfg = self.config
        start = x[:, x.shape[1] - cfg.label_len :]
        return torch.cat([start, x.new_zeros(x.shape[0], cfg.pred_len, x.shape[2])], dim=1)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        memory = self.encode(x, x_mark)
        h = self.dec_embedding(self.decoder_input(x), y_mark)  # (B, label_len + H, D)
        for layer in self.decoder:
            h = layer(h, memory)
        out = self.projection(self.dec_norm(h))  # (B, label_len + H, c_out)
        return out[:, -self.config.pred_len :]


@register_model
def informer(**overrides) -> Informer:
    """Informer with :class:`InformerConfig` defaults; keyword ``overrides`` set config fields."""
    return Informer(InformerConfig(**overrides))
