"""Token merging (ToMe) patched into a timm ``VisionTransformer`` in place, by class swapping.

Follows the idea of facebookresearch/ToMe ``tome/patch/timm.py`` with our merge functions: every
``Block`` becomes a :class:`ToMeBlock` and its ``attn`` a :class:`ToMeAttention` (``obj.__class__`` swap, so
parameters, names and ``state_dict`` are untouched and pretrained weights load either way), and the model
becomes a dynamic subclass whose ``forward_features`` resets a :class:`ToMeState` and whose ``pool`` weights
tokens by size. Inside a block the merge runs between attention and MLP:
``x = x + attn(norm1(x))``; merge ``r`` tokens by the keys' head-mean; ``x = x + mlp(norm2(x))``.

Pooling after merging: ``"token"`` reads the (never merged) class token; ``"avg"`` is the size-weighted mean
over the pooled tokens (so it equals the mean over the original patches that each merged token stands for);
``"avgmax"`` uses that weighted mean plus the plain max; ``"max"`` is the plain max; attention pooling
(``"map"``) runs unweighted over the merged tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from longseq.core.reduction.base import compose_merge_maps
from longseq.core.reduction.merge import bipartite_soft_matching, merge_wavg, proportional_attention_bias

SUPPORTED_METHODS = ("tome",)


@dataclass
class ToMeState:
    """Token merging settings and per-forward bookkeeping shared by a patched model and its blocks.

    Attributes:
        r: tokens merged away per block (each block clips it to half its non-prefix tokens).
        prop_attn: add ``log(size)`` to the attention logits of merged keys.
        num_prefix_tokens: leading tokens (class, distillation, registers) that are never merged.
        sizes: ``(B, L', 1)`` fp32 token sizes; ``None`` while no merge has happened in this forward.
            After ``forward_features`` it holds the final sizes (all ones when nothing merged).
        merge_map: int64 ``(B, L)`` composed map from every block-input token of the first block to its
            final token; set after ``forward_features``.
        merged: whether any block merged tokens in the last forward.
    """

    r: int
    prop_attn: bool
    num_prefix_tokens: int
    sizes: torch.Tensor | None = None
    merge_map: torch.Tensor | None = None
    merged: bool = False

    def reset(self) -> None:
        """Forget the previous forward's sizes and merge map."""
        self.sizes, self.merge_map, self.merged = None, None, False


class ToMeAttention(Attention):
    """timm ``Attention`` that also returns the merge metric and applies proportional attention."""

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        *,
        sizes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend over ``x`` ``(B, L, C)``; ``sizes`` ``(B, L, 1)`` adds ``log(size)`` per key when given.

        Returns:
            ``(out, metric)``: ``(B, L, C)`` attention output and ``(B, L, head_dim)`` keys averaged over heads.
        """
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        # (B, L, C) -> 3 x (B, H, L, D)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if sizes is not None:
            bias = proportional_attention_bias(sizes).to(q.dtype)  # (B, 1, 1, L)
            attn_mask = bias if attn_mask is None else attn_mask + bias
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=is_causal
            )
        else:
            if is_causal:
                raise NotImplementedError("ToMeAttention: is_causal is only supported with fused attention")
            attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, L, L)
            if attn_mask is not None:
                attn = attn + attn_mask
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)  # (B, H, L, D) -> (B, L, C)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        x = self.proj_drop(self.proj(x))
        return x, k.mean(dim=1)  # (B, L, C), (B, L, D)


class ToMeBlock(Block):
    """timm ``Block`` that merges ``r`` tokens between attention and MLP; reads ``self._tome_state``."""

    _tome_state: ToMeState
    _tome_index: int

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """``(B, L, C)`` -> ``(B, L - r, C)``, ``r`` clipped to half the non-prefix tokens."""
        state = self._tome_state
        if self._tome_index == 0:  # every path into the blocks (forward_features, forward_intermediates) starts here
            state.reset()
        B, L, _ = x.shape
        P = state.num_prefix_tokens
        if state.merge_map is None:
            state.merge_map = torch.arange(L, device=x.device).expand(B, L).clone()
        r = min(state.r, (L - P) // 2)
        if r > 0 and (attn_mask is not None or is_causal):
            raise ValueError("token merging with r > 0 cannot keep an attn_mask or is_causal aligned to merged tokens")
        if r == 0 and state.sizes is None:  # nothing merged yet or now: timm's own attention, bit for bit
            out = Attention.forward(self.attn, self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)
        else:
            sizes = state.sizes if state.prop_attn else None
            out, metric = self.attn(self.norm1(x), attn_mask=attn_mask, is_causal=is_causal, sizes=sizes)
        x = x + self.drop_path1(self.ls1(out))
        if r > 0:
            merge = bipartite_soft_matching(metric, r, P)
            x, state.sizes = merge_wavg(merge, x, state.sizes)
            state.merge_map = compose_merge_maps(state.merge_map, merge.merge_map)
            state.merged = True
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class _ToMeVisionTransformer:
    """Mixin placed before the model's own class: resets the state per forward and pools by size."""

    _tome_state: ToMeState
    _tome_original_class: type

    def _tome_begin(self) -> ToMeState:
        """Reset the state for a new forward; refuse gradient checkpointing, whose recompute would re-merge."""
        state = self._tome_state
        if state.r > 0 and self.grad_checkpointing and torch.is_grad_enabled():  # type: ignore[attr-defined]
            raise NotImplementedError(
                "token merging with r > 0 does not support grad_checkpointing: recomputed blocks would read "
                "the token sizes of a later block; call model.set_grad_checkpointing(False) or use r=0"
            )
        state.reset()
        return state

    def forward_features(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """timm ``forward_features``; afterwards ``_tome_state`` holds the final sizes and merge map."""
        state = self._tome_begin()
        x = super().forward_features(x, *args, **kwargs)  # type: ignore[misc]
        if state.sizes is None:
            state.sizes = torch.ones(*x.shape[:2], 1, dtype=torch.float32, device=x.device)
        return x

    def forward_intermediates(self, *args, **kwargs):
        """timm ``forward_intermediates``; with ``r > 0`` only ``output_fmt="NLC"`` (merged tokens have no grid)."""
        state = self._tome_begin()
        if state.r > 0 and kwargs.get("output_fmt", "NCHW") != "NLC":
            raise NotImplementedError("token merging with r > 0: forward_intermediates needs output_fmt='NLC'")
        return super().forward_intermediates(*args, **kwargs)  # type: ignore[misc]

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        """timm ``pool`` with ``"avg"`` (and the mean in ``"avgmax"``) weighted by token size."""
        pool_type = self.global_pool if pool_type is None else pool_type  # type: ignore[attr-defined]
        state = self._tome_state
        if not state.merged or self.attn_pool is not None or pool_type not in ("avg", "avgmax"):  # type: ignore[attr-defined]
            return super().pool(x, pool_type)  # type: ignore[misc]
        sizes = state.sizes
        if sizes is None or tuple(sizes.shape[:2]) != tuple(x.shape[:2]):
            got = None if sizes is None else tuple(sizes.shape)
            raise ValueError(f"pool: x {tuple(x.shape)} does not match the last forward's token sizes {got}")
        if not self.pool_include_prefix:  # type: ignore[attr-defined]
            P = self.num_prefix_tokens  # type: ignore[attr-defined]
            x, sizes = x[:, P:], sizes[:, P:]
        # (B, L', C) -> (B, C)
        mean = ((x.float() * sizes).sum(dim=1) / sizes.sum(dim=1)).to(x.dtype)
        return mean if pool_type == "avg" else 0.5 * (x.amax(dim=1) + mean)


_CLASS_CACHE: dict[type, type] = {}


def _tome_class(cls: type) -> type:
    if cls not in _CLASS_CACHE:
        _CLASS_CACHE[cls] = type(f"ToMe{cls.__name__}", (_ToMeVisionTransformer, cls), {})
    return _CLASS_CACHE[cls]


def apply_token_reduction(
    model: VisionTransformer, method: str = "tome", r: int = 13, *, prop_attn: bool = True
) -> VisionTransformer:
    """Patch a timm ``VisionTransformer`` (ViT, DeiT) in place to merge ``r`` tokens in every block.

    Parameters and ``state_dict`` are unchanged. Calling it again on a patched model updates ``r`` and
    ``prop_attn``. After a forward, ``model._tome_state`` (:class:`ToMeState`) holds the final ``sizes``
    ``(B, L', 1)`` and the composed ``merge_map`` ``(B, L)`` over the first block's input tokens.

    Args:
        model: a timm ``VisionTransformer`` whose blocks are plain timm ``Block`` with ``Attention``.
        method: reduction method; only ``"tome"`` is supported.
        r: tokens removed per block, ``>= 0``; ``0`` reproduces the unpatched model exactly.
        prop_attn: proportional attention (``log(size)`` added to the logits of merged keys).

    Returns:
        ``model`` itself, patched.
    """
    if method not in SUPPORTED_METHODS:
        raise NotImplementedError(f"token reduction method {method!r} is not supported; supported: {SUPPORTED_METHODS}")
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"r must be an int >= 0, got {r!r}")
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"model must be a timm VisionTransformer (or subclass), got {type(model).__name__}")
    if isinstance(model, _ToMeVisionTransformer):
        model._tome_state.r, model._tome_state.prop_attn = r, prop_attn
        return model
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise TypeError(
                f"model.blocks[{i}] must be a timm Block with Attention, got {type(blk).__name__} with "
                f"{type(getattr(blk, 'attn', None)).__name__}"
            )
    state = ToMeState(r=r, prop_attn=prop_attn, num_prefix_tokens=model.num_prefix_tokens)
    for i, blk in enumerate(model.blocks):
        blk.__class__ = ToMeBlock
        blk.attn.__class__ = ToMeAttention
        blk._tome_state, blk._tome_index = state, i
    model._tome_original_class = model.__class__
    model.__class__ = _tome_class(model.__class__)
    model._tome_state = state
    return model


def remove_token_reduction(model: VisionTransformer) -> VisionTransformer:
    """Undo :func:`apply_token_reduction` in place; returns ``model``. Raises if it was not patched."""
    if not isinstance(model, _ToMeVisionTransformer):
        raise ValueError(f"model ({type(model).__name__}) was not patched by apply_token_reduction")
    for blk in model.blocks:
        blk.__class__ = Block
        blk.attn.__class__ = Attention
        del blk._tome_state, blk._tome_index
    model.__class__ = model._tome_original_class
    del model._tome_original_class, model._tome_state
    return model
