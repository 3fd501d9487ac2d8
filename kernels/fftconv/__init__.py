"""Long causal convolution (Hyena's long filter) with fused gates: Triton blocked-FFT kernels, a
``torch.library`` custom op and the public function.

>>> y = fftconv(v, h, D, pre_gate=x1, gate=x0)  # y = x0 * (causal_conv(v * x1, h) + D * v * x1)

Layout: ``(B, D, L)``: channels before time, like Hyena's and FlashFFTConv's code, because every
channel's signal is then contiguous and the transforms read and write it in long runs; a
``(B, L, D)`` model produces this layout for free by computing its input projection as
``W @ x^T`` (see ``longseq.core.mixers.hyena``). Packed input keeps the token axis last: ``x`` of
shape ``(D, T)`` with ``cu_seqlens`` int32 ``[N+1]``.

CUDA tensors (and every tensor under ``TRITON_INTERPRET=1``) run the Triton kernels; other CPU tensors
run :func:`fftconv_torch` (``torch.fft``), so layers built on this work everywhere. fp32 activations on CUDA
also run :func:`fftconv_torch` while :data:`FP32_USES_TORCH_FFT` is set (the default): the kernels'
fp32 path needs three tensor-core products per DFT matmul (``tf32x3``) and is slower than cuFFT. The ops are
registered as ``longseq::fftconv_fwd`` / ``longseq::fftconv_bwd`` with fake implementations, so
``torch.compile(fullgraph=True)`` sees one opaque node.

Packed sequences are scattered into a zero-padded ``(N, D, max_len)`` batch, convolved, and gathered
back: simple and exactly per-sequence (causality keeps the padding behind every real token), at the
cost of the padding's memory and work when lengths differ a lot.
"""

from __future__ import annotations

import torch

from longseq.kernels._common import check_cu_seqlens, check_dtype, check_same_device, use_triton
from longseq.kernels.fftconv import triton as _triton
from longseq.kernels.fftconv.reference import (
    causal_conv_direct,
    causal_conv_fft,
    fft_size,
    fftconv_packed_ref,
    fftconv_ref,
    fftconv_torch,
)

__all__ = [
    "causal_conv_direct",
    "causal_conv_fft",
    "fft_size",
    "fftconv",
    "fftconv_packed_ref",
    "fftconv_ref",
    "fftconv_torch",
]


#: fp32 activations on CUDA run :func:`fftconv_torch` (cuFFT). The kernels' fp32 path (``tf32x3``) measured
#: 0.57-0.87x torch.fft at L=16K, 0.98-1.01x at 64K, 0.69x at 256K and 0.32-0.34x at 1M, D=256 and 864, on an
#: H200 (the ``longseq_kernels`` rows of ``benchmarks/results/fftconv-h200.json``); bf16 and fp16 run the kernels.
#: False: the kernels for every dtype (the tests set it to check their fp32 path).
FP32_USES_TORCH_FFT = True

# --------------------------------------------------------------------------------------------
# custom ops
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("longseq::fftconv_fwd", mutates_args=())
def _fftconv_fwd(
    x: torch.Tensor,
    h: torch.Tensor,
    skip: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    gate: torch.Tensor | None,
    save_z: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, z)`` for contiguous ``x`` ``(B, D, L)`` and ``h`` ``(D, Lh)``, ``Lh <= L``; ``z`` (the output
    before the post-gate, kept for ``dgate``) is empty unless ``save_z``."""
    return _triton.fftconv_fwd(x, h, skip, pre_gate, gate, save_z)


@_fftconv_fwd.register_fake
def _(x, h, skip, pre_gate, gate, save_z):
    return torch.empty_like(x), torch.empty_like(x) if save_z else x.new_empty(0)


@torch.library.custom_op("longseq::fftconv_bwd", mutates_args=())
def _fftconv_bwd(
    dy: torch.Tensor,
    x: torch.Tensor,
    h: torch.Tensor,
    skip: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    gate: torch.Tensor | None,
    z: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx, dh, dskip, dpre_gate, dgate)``; a gradient whose input is absent is an empty tensor, and so is
    ``dgate`` without ``z``."""
    dx, dh, dskip, dpre, dgate = _triton.fftconv_bwd(dy, x, h, skip, pre_gate, gate, z)
    return dx, dh, *(t if t is not None else x.new_empty(0) for t in (dskip, dpre, dgate))  # outputs never alias


@_fftconv_bwd.register_fake
def _(dy, x, h, skip, pre_gate, gate, z):
    def like(t: torch.Tensor | None, present: bool = True) -> torch.Tensor:
        return torch.empty_like(t) if t is not None and present else x.new_empty(0)

    return torch.empty_like(x), torch.empty_like(h), like(skip), like(pre_gate), like(gate, z is not None)


def _setup_context(ctx, inputs, output) -> None:
    x, h, skip, pre_gate, gate, save_z = inputs
    _y, z = output
    ctx.mark_non_differentiable(z)
    ctx.save_for_backward(x, h, skip, pre_gate, gate, z if save_z else None)


def _backward(ctx, dy: torch.Tensor, _dz: torch.Tensor):
    x, h, skip, pre_gate, gate, z = ctx.saved_tensors
    dx, dh, dskip, dpre, dgate = _fftconv_bwd(dy.contiguous(), x, h, skip, pre_gate, gate, z)
    return (
        dx,
        dh,
        dskip if skip is not None else None,
        dpre if pre_gate is not None else None,
        dgate if gate is not None and z is not None else None,
        None,
    )


torch.library.register_autograd("longseq::fftconv_fwd", _backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------
# validation and packing
# --------------------------------------------------------------------------------------------


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _validate(
    x: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None,
    gate: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> None:
    check_dtype("x", x)
    check_dtype("h", h)
    if cu_seqlens is None and x.dim() != 3:
        raise ValueError(f"x must have shape (B, D, L), got {_shape(x)} (packed input is (D, T) with cu_seqlens)")
    if cu_seqlens is not None and x.dim() != 2:
        raise ValueError(f"with cu_seqlens, x must have shape (D, T), got {_shape(x)}")
    channels = x.shape[-2]
    if h.dim() != 2 or h.shape[0] != channels or h.shape[1] == 0:
        raise ValueError(f"h must have shape ({channels}, Lh) with Lh >= 1 to match x's channels, got {_shape(h)}")
    if D is not None:
        check_dtype("D", D)
        if _shape(D) != (channels,):
            raise ValueError(f"D must have shape ({channels},) to match x's channels, got {_shape(D)}")
    for name, g in (("gate", gate), ("pre_gate", pre_gate)):
        if g is None:
            continue
        if g.shape != x.shape:
            raise ValueError(f"{name} must have x's shape {_shape(x)}, got {_shape(g)}")
        if g.dtype != x.dtype:
            raise TypeError(f"{name} must have x's dtype {x.dtype}, got {g.dtype}")
    check_same_device(x=x, h=h, D=D, gate=gate, pre_gate=pre_gate, cu_seqlens=cu_seqlens)
    if cu_seqlens is not None:
        check_cu_seqlens(cu_seqlens, x.shape[-1], total_name=f"the total tokens T = {x.shape[-1]} of x")


def _packed_index(
    cu_seqlens: torch.Tensor, total: int, max_seqlen: int | None
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """``(seq, pos, num_seqs, pad_len)``: sequence and position of every packed token, and the padded length."""
    lens = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    longest = int(lens.max()) if lens.numel() else 0
    if max_seqlen is not None and max_seqlen < longest:
        raise ValueError(f"max_seqlen {max_seqlen} is shorter than the longest packed sequence ({longest})")
    num = lens.numel()
    seq = torch.repeat_interleave(torch.arange(num, device=cu_seqlens.device), lens, output_size=total)  # (T,)
    pos = torch.arange(total, device=cu_seqlens.device) - cu_seqlens[:-1].long()[seq]  # (T,)
    return seq, pos, num, longest if max_seqlen is None else max_seqlen


def _scatter(t: torch.Tensor | None, seq: torch.Tensor, pos: torch.Tensor, num: int, pad_len: int):
    """Packed ``(D, T)`` -> zero-padded ``(N, D, pad_len)``."""
    if t is None:
        return None
    out = t.new_zeros(num, t.shape[0], pad_len)
    out[seq, :, pos] = t.t()  # (T, D) into (N, D, pad_len)
    return out


# --------------------------------------------------------------------------------------------
# public function
# --------------------------------------------------------------------------------------------


def _fftconv_batched(
    x: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None,
    gate: torch.Tensor | None,
    pre_gate: torch.Tensor | None,
) -> torch.Tensor:
    L = x.shape[-1]
    if h.shape[-1] > L:  # taps past L reach no output; their gradient is zero
        h = h[:, :L]
    if not use_triton(x) or (x.is_cuda and x.dtype == torch.float32 and FP32_USES_TORCH_FFT):
        return fftconv_torch(x, h, D, gate, pre_gate)
    save_z = gate is not None and gate.requires_grad and torch.is_grad_enabled()
    contiguous = (None if t is None else t.contiguous() for t in (x, h, D, pre_gate, gate))
    y, _z = _fftconv_fwd(*contiguous, save_z)
    return y


def fftconv(
    x: torch.Tensor,
    h: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    gate: torch.Tensor | None = None,
    pre_gate: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
) -> torch.Tensor:
    """Causal long convolution with skip term and gates: ``y = gate * (conv(u, h) + D * u)``, ``u = x * pre_gate``,
    where ``conv(u, h)[t] = sum_{s<=t} h[s] u[t-s]`` per channel.

    Args:
        x: ``(B, D, L)``, or packed ``(D, T)`` with ``cu_seqlens``; fp16, bf16 or fp32.
        h: ``(D, Lh)`` filter, any float dtype and length (taps at ``s >= L`` reach no output; a shorter
            filter is zero beyond its end). Packed sequences each use ``h[:, :len]``.
        D: optional ``(D,)`` skip weight.
        gate: optional post-gate, ``x``'s shape and dtype.
        pre_gate: optional pre-gate, ``x``'s shape and dtype.
        cu_seqlens: int32 ``[N+1]`` boundaries of the packed sequences in ``x``'s last dimension; the
            convolution never crosses them.
        max_seqlen: optional padded length for packed input (at least the longest sequence).

    Returns:
        ``x``'s shape and dtype. Differentiable in ``x``, ``h``, ``D`` and both gates; the transforms run in
        fp32 (see ``longseq.kernels.fftconv.triton`` for the method and its precision).
    """
    _validate(x, h, D, gate, pre_gate, cu_seqlens)
    if cu_seqlens is None:
        return _fftconv_batched(x, h, D, gate, pre_gate)
    seq, pos, num, pad_len = _packed_index(cu_seqlens, x.shape[-1], max_seqlen)

    def pad(t: torch.Tensor | None) -> torch.Tensor | None:
        return _scatter(t, seq, pos, num, pad_len)

    y = _fftconv_batched(pad(x), h, D, pad(gate), pad(pre_gate))  # (N, D, pad_len)
    return y[seq, :, pos].t().contiguous()  # (D, T)
