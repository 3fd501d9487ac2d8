"""Dynamic token pooling (Nawrot et al. 2023): learned segment boundaries, segment means and
:func:`upsample` back to the original positions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from longseq.core.packing import PackedBatch, segment_ids, segment_sum
from longseq.core.reduction.varlen import (
    VarlenOutput,
    _acc_sizes,
    _check_mask,
    _check_packed,
    _check_padded,
    _check_prefix,
    _check_tokenwise,
    _packed_output,
    padded_to_packed,
    scatter_to_padded,
    varlen_to_padded,
)

# ruff: noqa: N806  (B, L, D, T, H, P, S follow the shape-comment convention)

# --------------------------------------------------------------------------------------------
# dynamic token pooling
# --------------------------------------------------------------------------------------------


@dataclass
class DynamicPoolingOutput(VarlenOutput):
    """:class:`VarlenOutput` of :class:`DynamicTokenPooling`, plus what :func:`upsample` needs.

    Attributes:
        boundaries: fp32 ``(B, L)`` / ``(T,)``, 1 where a token starts a segment (straight-through: the hard
            value with the Gumbel-sigmoid's gradient in training); 0 at prefix tokens and padding.
        weights: fp32 ``(B, L)`` / ``(T,)``, 1 at every real token with the gradient of its segment
            coordinate (so upsampling passes gradients to the boundary predictor); 0 at padding.
    """

    boundaries: torch.Tensor | None = None
    weights: torch.Tensor | None = None


def upsample(y: torch.Tensor, out: DynamicPoolingOutput) -> torch.Tensor:
    """Map pooled tokens back to the input positions: position ``t`` gets ``y[merge_map[t]]`` (its segment).

    Args:
        y: per-output values, shaped like ``out.x`` (``(B, L', D)`` or packed ``(T', D)``).
        out: the :class:`DynamicPoolingOutput` that produced the pooled tokens.

    Returns:
        ``(B, L, D)`` (zeros at input padding) or ``(T, D)``. Non-causal: a position sees its own segment's
        mean (the paper's language models shift by one segment so no token sees its future).
    """
    if y.shape[:-1] != out.x.shape[:-1]:
        raise ValueError(
            f"y must be shaped like the pooled tokens {tuple(out.x.shape[:-1])} + (D,), got {tuple(y.shape)}"
        )
    if y.dim() == 3:
        gathered = y.gather(1, out.merge_map[..., None].expand(-1, -1, y.shape[-1]))  # (B, L, D)
    else:
        gathered = y[out.merge_map]  # (T, D)
    return gathered * out.weights[..., None].to(y.dtype)


class DynamicTokenPooling(nn.Module):
    """Dynamic token pooling (Nawrot et al. 2023): a learned boundary predictor segments the tokens, and
    every segment becomes the mean of its tokens.

    A 2-layer MLP gives a boundary logit per token; a boundary starts a new segment (the first content token
    always does). Training samples hard boundaries from a Gumbel-sigmoid at ``temperature`` with the
    straight-through gradient; eval thresholds ``sigmoid(logit) > threshold`` (deterministic). Segment means
    weight each token by ``1 + c_t - stop_grad(c_t)`` (value 1), where ``c_t`` is its segment coordinate
    ``cumsum(boundaries) - 1``: that is how gradients of the pooled tokens reach the predictor, as in the
    paper's code. :meth:`regularization_loss` is the paper's binomial prior on the number of boundaries,
    ``-log Binomial(k; n, prior) / n``, which steers the shortening rate to about ``1 / prior``.

    Args:
        dim: feature width D.
        hidden: the predictor's hidden width (default ``dim``).
        prior: target fraction of tokens that start a segment, in ``(0, 1)``.
        temperature: Gumbel-sigmoid temperature, ``> 0``.
        threshold: eval boundary probability threshold, in ``(0, 1)``.
        num_prefix_tokens: leading tokens kept alone and unchanged.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden: int | None = None,
        prior: float = 0.2,
        temperature: float = 0.5,
        threshold: float = 0.5,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < prior < 1:
            raise ValueError(f"prior must be in (0, 1), got {prior}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        _check_prefix(num_prefix_tokens)
        hidden = dim if hidden is None else hidden
        self.predictor = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.prior, self.temperature, self.threshold = prior, temperature, threshold
        self.num_prefix_tokens = num_prefix_tokens
        self._prior_loss: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return (
            f"prior={self.prior}, temperature={self.temperature}, threshold={self.threshold}, "
            f"num_prefix_tokens={self.num_prefix_tokens}"
        )

    def boundary_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> fp32 ``(...)`` boundary logits."""
        return self.predictor(x)[..., 0].float()

    def sample_boundaries(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard 0/1 boundaries: Gumbel-sigmoid with straight-through gradient (training) or a threshold (eval)."""
        if not self.training:
            return (torch.sigmoid(logits) > self.threshold).float()
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        soft = torch.sigmoid((logits + u.log() - (-u).log1p()) / self.temperature)
        hard = (soft > 0.5).float()
        return hard + (soft - soft.detach())  # exactly 0/1 in value, the soft gradient

    def regularization_loss(self) -> torch.Tensor:
        """The binomial prior loss of the last forward, averaged over sequences with content tokens."""
        if self._prior_loss is None:
            raise RuntimeError("regularization_loss() needs a forward pass first")
        return self._prior_loss

    def forward(
        self,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        packed: PackedBatch | None = None,
        sizes: torch.Tensor | None = None,
    ) -> DynamicPoolingOutput:
        """Segment and pool padded ``(B, L, D)`` (optional ``mask``) or packed ``(T, D)`` tokens.

        Returns:
            A :class:`DynamicPoolingOutput`: ``[prefix, segment means]`` per sequence, ``sizes`` the segment
            lengths (summed sizes), ``merge_map`` token -> segment (``0`` at input padding), padded with
            ``mask`` or packed with ``packed``.
        """
        P = self.num_prefix_tokens
        if packed is not None:
            if mask is not None:
                raise ValueError("mask is for padded input; packed input has its boundaries in packed")
            _check_packed(x, packed, P)
            _check_tokenwise(sizes, (packed.num_tokens,), "sizes", (1,))
            return self._forward_packed(x, packed, sizes)
        _check_padded(x, P)
        _check_mask(mask, x)
        B, L, _ = x.shape
        _check_tokenwise(sizes, (B, L), "sizes", (1,))
        flat = padded_to_packed(x, mask)
        out = self._forward_packed(flat.x, flat, None if sizes is None else padded_to_packed(sizes, mask).x)
        padded = varlen_to_padded(out, flat, mask, (B, L))
        return DynamicPoolingOutput(
            x=padded.x,
            sizes=padded.sizes,
            merge_map=padded.merge_map,
            mask=padded.mask,
            boundaries=scatter_to_padded(out.boundaries, mask, (B, L)),
            weights=scatter_to_padded(out.weights, mask, (B, L)),
        )

    def _forward_packed(self, x: torch.Tensor, packed: PackedBatch, sizes: torch.Tensor | None) -> DynamicPoolingOutput:
        P = self.num_prefix_tokens
        T = packed.num_tokens
        cu = packed.cu_seqlens
        seg = segment_ids(cu, T)
        pos = packed.position_ids.long()
        content = pos >= P
        b = self.sample_boundaries(self.boundary_logits(x))  # (T,)
        b = torch.where(pos == P, 1.0, b) * content  # the first content token starts a segment
        hard = b.detach()
        n_seg = segment_sum(hard, cu)  # (N,) segments per sequence
        lengths = P + n_seg.round().long()
        # output slot: P prefix slots per sequence before it and its own, plus all earlier segments
        coord = b.cumsum(0) - 1 + P * (seg + 1)  # (T,) content tokens: their segment's slot (differentiable)
        seg_before = (n_seg.cumsum(0) - n_seg)[seg]
        slot = torch.where(content, coord.detach().round(), seg_before + P * seg + pos).long()
        weights = torch.where(content, 1.0 + coord - coord.detach(), 1.0)  # value 1, gradient of coord
        T_out = int(lengths.sum())
        acc = _acc_sizes(x, sizes)
        w = weights[:, None].to(acc.dtype) * acc  # (T, 1) size-weighted segment means
        num = acc.new_zeros(T_out, x.shape[1]).index_add(0, slot, x.to(acc.dtype) * w)
        den = acc.new_zeros(T_out, 1).index_add(0, slot, w)
        y = (num / den).to(x.dtype)
        out_sizes = acc.new_zeros(T_out, 1).index_add(0, slot, acc)
        n = segment_sum(content.float(), cu)
        valid = n > 0
        if bool(valid.any()):
            k = segment_sum(b, cu)[valid]  # boundaries per sequence (straight-through)
            prior = torch.tensor(self.prior, device=x.device)
            binomial = torch.distributions.Binomial(total_count=n[valid], probs=prior, validate_args=False)
            self._prior_loss = (-binomial.log_prob(k) / n[valid]).mean()
        else:
            self._prior_loss = x.new_zeros((), dtype=torch.float32)
        return DynamicPoolingOutput(
            x=y,
            sizes=out_sizes,
            merge_map=slot,
            keep_index=None,
            packed=_packed_output(y, lengths),
            boundaries=b,
            weights=weights,
        )
