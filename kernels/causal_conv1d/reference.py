"""Depthwise causal conv1d reference: the spec the Triton kernels are tested against.

For channel ``d`` at time ``t`` (window of ``W`` taps, the last tap on ``t`` itself)::

    out[b, d, t] = act(bias[d] + sum_{k=0}^{W-1} weight[d, k] * x[b, d, t - (W - 1) + k])

where ``x`` at negative times is 0 and, with ``seq_idx`` ``(B, L)``, a tap reads only tokens of the
same sequence as ``t`` (``seq_idx[b, s] == seq_idx[b, t]``), so packed sequences never mix.
``act`` is the identity or SiLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _activate(y: torch.Tensor, activation: str | None) -> torch.Tensor:
    return F.silu(y) if activation in ("silu", "swish") else y


def causal_conv1d_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    seq_idx: torch.Tensor | None = None,
    upcast: bool = True,
) -> torch.Tensor:
    """Depthwise causal convolution, one tap at a time.

    Args:
        x: ``(B, D, L)``.
        weight: ``(D, W)``.
        bias: optional ``(D,)``.
        activation: ``None``, ``"silu"`` or ``"swish"`` (= SiLU).
        seq_idx: optional int ``(B, L)`` sequence index of each token; taps never cross a change.
        upcast: compute in fp32 and return fp32; ``False`` runs the same math in ``x.dtype``.
    """
    if upcast:
        x, weight = x.float(), weight.float()
        bias = None if bias is None else bias.float()
    B, D, L = x.shape
    W = weight.shape[1]
    out = torch.zeros_like(x) if bias is None else bias[None, :, None].expand(B, D, L).clone()
    for k in range(W):
        shift = W - 1 - k  # tap k reads x[t - shift]
        shifted = F.pad(x, (shift, 0))[..., :L]  # (B, D, L): x[t - shift], 0 before the start
        if seq_idx is not None and shift > 0:
            prev = F.pad(seq_idx, (shift, 0), value=-1)[..., :L]  # seq_idx[t - shift]
            shifted = shifted * (prev == seq_idx)[:, None, :].to(x.dtype)
        out = out + weight[None, :, k, None] * shifted
    return _activate(out, activation)


def causal_conv1d_update_ref(
    x: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
    upcast: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``Lnew`` tokens from a rolling state; returns ``(out, new_state)`` without mutating inputs.

    Args:
        x: ``(B, D)`` (one token) or ``(B, D, Lnew)``.
        conv_state: ``(B, D, S)`` with ``S >= W - 1``: the last ``S`` inputs, oldest first.
        weight, bias, activation, upcast: as in :func:`causal_conv1d_ref`.

    Returns:
        ``out`` of ``x``'s shape and ``new_state`` ``(B, D, S)``: the last ``S`` inputs of
        ``cat(conv_state, x)``.
    """
    squeeze = x.dim() == 2
    x3 = x.unsqueeze(-1) if squeeze else x  # (B, D, Lnew)
    S, W, Lnew = conv_state.shape[-1], weight.shape[1], x3.shape[-1]
    full = torch.cat([conv_state.to(x3.dtype), x3], dim=-1)  # (B, D, S + Lnew)
    window = full[..., S - (W - 1) :]  # (B, D, W - 1 + Lnew)
    out = causal_conv1d_ref(window, weight, bias, activation, upcast=upcast)[..., W - 1 :]  # (B, D, Lnew)
    new_state = full[..., Lnew:].to(conv_state.dtype)
    return (out.squeeze(-1) if squeeze else out), new_state
