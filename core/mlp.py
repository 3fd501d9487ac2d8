"""Channel MLPs for :class:`~longseq.core.block.Block`: GELU and SwiGLU, built by name with :func:`create_mlp`."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLPS", "Mlp", "SwiGLU", "create_mlp"]


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))``: the transformer MLP (GELU by default).

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels.
        act: activation module class.
        bias: biases in both linears.
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        act: Callable[[], nn.Module] = nn.GELU,
        bias: bool = True,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = act()
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwiGLU(nn.Module):
    """``w3(silu(w1 x) * w2 x)`` (Shazeer 2020), with ``w1`` and ``w2`` fused into one linear.

    Args:
        dim: input and output channels.
        hidden_dim: hidden channels (LLaMA uses about ``8/3 * dim`` to match a 4x GELU MLP's size).
        bias: biases in the linears.
        drop: dropout after the gate and after ``w3``.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False, drop: float = 0.0) -> None:
        super().__init__()
        self.w12 = nn.Linear(dim, 2 * hidden_dim, bias=bias)
        self.w3 = nn.Linear(hidden_dim, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(x).chunk(2, dim=-1)  # (..., hidden) each
        return self.drop(self.w3(self.drop(F.silu(gate) * up)))


#: MLP constructors by name; each takes ``(dim, hidden_dim, bias=..., drop=...)``.
MLPS: dict[str, Callable[..., nn.Module]] = {"gelu": Mlp, "swiglu": SwiGLU}


def create_mlp(
    name: str,
    dim: int,
    *,
    hidden_ratio: float = 4.0,
    hidden_dim: int | None = None,
    multiple_of: int = 8,
    **kwargs,
) -> nn.Module | None:
    """The MLP called ``name`` (``"gelu"``, ``"swiglu"``; ``"none"`` gives ``None``: a block without MLP).

    The hidden size is ``hidden_dim`` when given, else ``hidden_ratio * dim``; for SwiGLU the ratio
    is scaled by 2/3 so the parameter count matches a GELU MLP of the same ratio. Computed sizes are
    rounded up to a multiple of ``multiple_of``.
    """
    if name == "none":
        return None
    if name not in MLPS:
        raise ValueError(f"unknown mlp {name!r}; choose one of {sorted(MLPS) + ['none']}")
    if hidden_dim is None:
        hidden = hidden_ratio * dim * (2 / 3 if name == "swiglu" else 1)
        hidden_dim = -(-int(hidden) // multiple_of) * multiple_of
    if hidden_dim < 1:
        raise ValueError(f"mlp hidden size must be >= 1, got {hidden_dim}")
    return MLPS[name](dim, hidden_dim, **kwargs)
