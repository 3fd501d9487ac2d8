"""Long causal convolution reference: the spec the Triton kernels are tested against.

Per channel ``d`` of ``x`` ``(B, D, L)`` and filter ``h`` ``(D, Lh)``::

    u = x * pre_gate                                   (pre_gate optional)
    z[b, d, t] = sum_{s=0..t} h[d, s] * u[b, d, t - s] + D[d] * u[b, d, t]
    y = z * gate                                       (gate optional)

Filter taps at ``s >= L`` never reach an output; a filter shorter than ``L`` is zero beyond its end.
Packed input (``x`` of shape ``(D, T)`` with ``cu_seqlens``) convolves every sequence on its own with
``h[:, :len]``: :func:`fftconv_packed_ref` loops over the sequences.

Two ways to compute the convolution: :func:`causal_conv_direct` (O(L^2) grouped ``conv1d`` in fp64,
for small ``L``) and :func:`causal_conv_fft` (``torch.fft`` rfft/irfft zero-padded to ``fft_size(L)``
in fp32, for large ``L``). :func:`fftconv_torch` is the latter as a differentiable PyTorch path: the
CPU fallback of :func:`longseq.kernels.fftconv.fftconv` and the benchmark baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fft_size(L: int) -> int:
    """Smallest power of two ``>= 2L - 1``: circular convolution of that size equals the linear one on
    the first ``L`` outputs (no wrap-around)."""
    return 1 << max(0, 2 * L - 2).bit_length()


def _fit_filter(h: torch.Tensor, L: int) -> torch.Tensor:
    """``h`` ``(D, Lh)`` cut or zero-padded to ``(D, L)``: taps beyond ``L`` cannot reach an output."""
    if h.shape[-1] >= L:
        return h[..., :L]
    return F.pad(h, (0, L - h.shape[-1]))


def causal_conv_direct(u: torch.Tensor, h: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``y[b, d, t] = sum_{s<=t} h[d, s] u[b, d, t-s]`` in ``dtype`` by direct O(L^2) summation.

    Args:
        u: ``(B, D, L)`` signal.
        h: ``(D, Lh)`` filter.
        dtype: compute and output dtype (fp64 by default: an exact reference for small ``L``).
    """
    B, D, L = u.shape
    if L == 0:
        return u.new_zeros(B, D, 0, dtype=dtype)
    w = _fit_filter(h, L).to(dtype).flip(-1).unsqueeze(1)  # (D, 1, L): conv1d correlates, so flip
    return F.conv1d(F.pad(u.to(dtype), (L - 1, 0)), w, groups=D)  # (B, D, L)


def causal_conv_fft(u: torch.Tensor, h: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The same convolution with ``torch.fft`` in ``dtype`` (fp32 or fp64): rfft of both zero-padded to
    ``fft_size(L)``, product, irfft, first ``L`` outputs. Returns ``(B, D, L)`` in ``dtype``."""
    L = u.shape[-1]
    if L == 0:
        return u.new_zeros(u.shape, dtype=dtype)
    n = fft_size(L)
    u_f = torch.fft.rfft(u.to(dtype), n=n)  # (B, D, n/2+1)
    h_f = torch.fft.rfft(_fit_filter(h, L).to(dtype), n=n)  # (D, n/2+1)
    return torch.fft.irfft(u_f * h_f, n=n)[..., :L]


def fftconv_ref(
    x: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    *,
    upcast: bool = True,
    method: str = "direct",
) -> torch.Tensor:
    """Gated causal long convolution ``y = gate * (conv(x * pre_gate, h) + D * x * pre_gate)``.

    Args:
        x: ``(B, D, L)`` input.
        h: ``(D, Lh)`` filter (any length; see the module docstring).
        D: optional ``(D,)`` skip weight.
        gate: optional ``(B, D, L)`` post-gate (multiplies the output).
        pre_gate: optional ``(B, D, L)`` pre-gate (multiplies the input).
        upcast: ``True``: compute in fp32 (the convolution in fp64 for ``method="direct"``) and return
            fp32. ``False``: the same math with every elementwise stage rounded to ``x.dtype`` and the
            convolution computed in fp32 on those rounded values, returned in ``x.dtype``; the tests
            measure low-precision rounding with it.
        method: ``"direct"`` (O(L^2) in fp64, exact), ``"fft"`` (``torch.fft`` in fp32, for large ``L``) or
            ``"fft64"`` (``torch.fft`` in fp64: an accurate reference for large ``L``).
    """
    convs = {
        "direct": causal_conv_direct,
        "fft": causal_conv_fft,
        "fft64": lambda u, h: causal_conv_fft(u, h, torch.float64),
    }
    if method not in convs:
        raise ValueError(f"method must be one of {sorted(convs)}, got {method!r}")
    dt = torch.float32 if upcast else x.dtype
    x, h, D, gate, pre_gate = (None if t is None else t.to(dt) for t in (x, h, D, gate, pre_gate))
    u = x if pre_gate is None else x * pre_gate
    z = convs[method](u, h).to(dt)
    if D is not None:
        z = z + D[:, None] * u
    return z if gate is None else z * gate


def fftconv_packed_ref(
    x: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None,
    gate: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
    **kwargs,
) -> torch.Tensor:
    """Packed ``x`` ``(D, T)``: :func:`fftconv_ref` on every sequence alone, concatenated to ``(D, T)``."""
    bounds = cu_seqlens.tolist()
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):

        def seq(t: torch.Tensor | None, s: int = start, e: int = end) -> torch.Tensor | None:
            return None if t is None else t[None, :, s:e]

        outs.append(fftconv_ref(seq(x), h, D, seq(gate), seq(pre_gate), **kwargs)[0])  # (D, len)
    if not outs:
        return fftconv_ref(x[None], h, D, **kwargs)[0]
    return torch.cat(outs, dim=-1)


def fftconv_torch(
    x: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """The PyTorch path: :func:`fftconv_ref` with ``torch.fft`` in fp32, returned in ``x.dtype``.

    Differentiable by autograd; used on CPU without the Triton interpreter and as the benchmark
    baseline (what Hyena's reference code does: rfft/irfft zero-padded to about ``2L``).
    """
    return fftconv_ref(x, h, D, gate, pre_gate, upcast=True, method="fft").to(x.dtype)
