"""PatchTST (Nie et al., "A Time Series is Worth 64 Words", ICLR 2023), supervised version.

Per channel (channel independence: every channel is its own sample, sharing all weights):
RevIN -> pad the end with ``stride`` copies of the last value -> patches of ``patch_len`` every
``stride`` steps (N = (L - patch_len) / stride + 2 patches; 42 for L = 336, 16/8) -> linear patch
embedding + learned positions -> ``e_layers`` post-norm Transformer layers (BatchNorm over the model
width, as in the paper; the attention is longseq's :class:`~longseq.core.attention.Attention`, any
backend) -> flatten head ``(N * d_model) -> H`` -> RevIN inverse.

Differences from the official code, on purpose: no "residual attention" (the official layer adds the
previous layer's scores; Time-Series-Library's PatchTST has none either), and ``fc_dropout`` of the
official scripts is not a parameter (it only affects the self-supervised pretraining head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from longseq.apps.timeseries.models.base import Forecaster, ForecasterConfig
from longseq.apps.timeseries.models.revin import RevIN
from longseq.core.attention import Attention
from longseq.core.mlp import Mlp
from longseq.core.registry import register_model

__all__ = ["PatchTST", "PatchTSTConfig", "PatchTSTLayer", "patch_count", "patchify", "patchtst"]


def patch_count(seq_len: int, patch_len: int, stride: int, pad_end: bool = True) -> int:
    """Patches of a look-back: ``(L - patch_len) // stride + 1``, plus one with end padding."""
    if patch_len > seq_len + (stride if pad_end else 0):
        raise ValueError(f"patch_len {patch_len} is longer than the (padded) look-back {seq_len}")
    return (seq_len - patch_len) // stride + 1 + int(pad_end)


def patchify(x: torch.Tensor, patch_len: int, stride: int, pad_end: bool = True) -> torch.Tensor:
    """``x`` (B, C, L) -> patches (B, C, N, patch_len); ``pad_end`` repeats the last value ``stride`` times."""
    if pad_end:
        x = torch.cat([x, x[..., -1:].expand(*x.shape[:-1], stride)], dim=-1)  # (B, C, L + stride)
    return x.unfold(-1, patch_len, stride)  # (B, C, N, P)


class _BatchNormTokens(nn.Module):
    """BatchNorm1d over the width of ``(B, N, D)`` tokens (statistics over batch and tokens)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class PatchTSTLayer(nn.Module):
    """Post-norm encoder layer: ``x = norm1(x + attn(x))``; ``x = norm2(x + mlp(x))``.

    Args:
        dim: d_model.
        num_heads: attention heads.
        d_ff: MLP hidden width (GELU).
        dropout: dropout of the attention output and the MLP.
        attn_dropout: dropout of the attention probabilities.
        norm: ``"batchnorm"`` (paper) or ``"layernorm"``.
        backend: attention backend (``"auto"``, ``"math"``, ``"sdpa"``, ``"flex"``, ``"flash"``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        norm: Literal["batchnorm", "layernorm"] = "batchnorm",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.attn = Attention(
            dim, num_heads, positions="none", qkv_bias=True, out_bias=True, proj_dropout=dropout,
            attn_dropout=attn_dropout, backend=backend,
        )  # fmt: skip
        self.mlp = Mlp(dim, d_ff, drop=dropout)
        make = _BatchNormTokens if norm == "batchnorm" else nn.LayerNorm
        self.norm1, self.norm2 = make(dim), make(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x))  # (B, N, D)
        return self.norm2(x + self.mlp(x))


@dataclass
class PatchTSTConfig(ForecasterConfig):
    """PatchTST options; defaults are the official ETTh1 script at look-back 336.

    Attributes:
        patch_len, stride: patch length and step.
        pad_end: pad the end with ``stride`` copies of the last value (``padding_patch="end"``).
        d_model, n_heads, e_layers, d_ff: Transformer width, heads, layers, MLP width.
        dropout: dropout in the encoder (and after the patch embedding).
        attn_dropout: dropout of the attention probabilities.
        head_dropout: dropout before the flatten head's linear layer.
        norm: ``"batchnorm"`` (paper) or ``"layernorm"``.
        revin, affine, subtract_last: RevIN on/off and its options.
        attn_backend: core attention backend name.
    """

    seq_len: int = 336
    patch_len: int = 16
    stride: int = 8
    pad_end: bool = True
    d_model: int = 16
    n_heads: int = 4
    e_layers: int = 3
    d_ff: int = 128
    dropout: float = 0.3
    attn_dropout: float = 0.0
    head_dropout: float = 0.0
    norm: Literal["batchnorm", "layernorm"] = "batchnorm"
    revin: bool = True
    affine: bool = True
    subtract_last: bool = False
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.patch_len < 1 or self.stride < 1:
            raise ValueError(f"patch_len and stride must be >= 1, got {self.patch_len} and {self.stride}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by n_heads {self.n_heads}")
        if self.norm not in ("batchnorm", "layernorm"):
            raise ValueError(f"norm must be 'batchnorm' or 'layernorm', got {self.norm!r}")
        for name in ("dropout", "attn_dropout", "head_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        patch_count(self.seq_len, self.patch_len, self.stride, self.pad_end)  # raises if no patch fits

    @property
    def num_patches(self) -> int:
        """N, the patches per channel."""
        return patch_count(self.seq_len, self.patch_len, self.stride, self.pad_end)


class PatchTST(Forecaster):
    """Channel-independent patch Transformer; output (B, H, C)."""

    config_class = PatchTSTConfig

    def __init__(self, config: PatchTSTConfig | None = None) -> None:
        config = PatchTSTConfig() if config is None else config
        super().__init__(config)
        cfg, N = config, config.num_patches
        self.revin = RevIN(cfg.enc_in, affine=cfg.affine, subtract_last=cfg.subtract_last) if cfg.revin else None
        self.patch_embed = nn.Linear(cfg.patch_len, cfg.d_model)
        self.pos = nn.Parameter(torch.empty(N, cfg.d_model).uniform_(-0.02, 0.02))  # learned positions
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            PatchTSTLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, cfg.attn_dropout, cfg.norm, cfg.attn_backend)
            for _ in range(cfg.e_layers)
        )
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(N * cfg.d_model, cfg.pred_len)

    def forecast(self, x: torch.Tensor, x_mark: torch.Tensor | None, y_mark: torch.Tensor | None) -> torch.Tensor:
        cfg = self.config
        B, _, C = x.shape
        stats = None
        if self.revin is not None:
            x, stats = self.revin.normalize(x)
        patches = patchify(x.transpose(1, 2), cfg.patch_len, cfg.stride, cfg.pad_end)  # (B, C, N, P)
        h = self.drop(self.patch_embed(patches).flatten(0, 1) + self.pos)  # (B*C, N, D): channels are samples
        for layer in self.layers:
            h = layer(h)
        y = self.head(self.head_drop(h.reshape(B, C, -1)))  # (B, C, H)
        y = y.transpose(1, 2)  # (B, H, C)
        return self.revin.denormalize(y, stats) if stats is not None else y


@register_model
def patchtst(**overrides) -> PatchTST:
    """PatchTST with :class:`PatchTSTConfig` defaults; keyword ``overrides`` set config fields."""
    return PatchTST(PatchTSTConfig(**overrides))
