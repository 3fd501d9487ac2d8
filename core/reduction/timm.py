"""Token merging (ToMe) and attentive pruning (EViT) patched into a timm ``VisionTransformer`` in place.

``method="evit"``: the blocks listed in ``layers`` become :class:`EViTBlock` with :class:`EViTAttention`,
which computes the class token's attention row separately (``q_cls . K``, ``O(L)``, so the main attention
stays fused) and prunes between attention and MLP with
:func:`~longseq.core.reduction.prune.attentive_prune`; the other blocks stay plain timm blocks.

``method="tome"`` (class swapping):

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

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Attention, Block, VisionTransformer

from longseq.core.reduction.base import compose_merge_maps
from longseq.core.reduction.merge import bipartite_soft_matching, merge_wavg, proportional_attention_bias
from longseq.core.reduction.prune import attentive_prune, evit_num_kept

SUPPORTED_METHODS = ("tome", "evit")


@dataclass(kw_only=True)
class _ForwardRecord:
    """The per-forward bookkeeping both states share (``sizes``, ``merge_map``, ``merged``; see
    :class:`ToMeState`), keyword-only so each state lists its settings first."""

    sizes: torch.Tensor | None = None
    merge_map: torch.Tensor | None = None
    merged: bool = False

    def reset(self) -> None:
        """Forget the previous forward's sizes and merge map."""
        self.sizes, self.merge_map, self.merged = None, None, False


@dataclass
class ToMeState(_ForwardRecord):
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

    @property
    def active(self) -> bool:
        """Whether any block can reduce tokens."""
        return self.r > 0


@dataclass
class EViTState(_ForwardRecord):
    """EViT settings and per-forward bookkeeping shared by a patched model and its pruning blocks.

    Attributes:
        keep_rate: fraction of the non-prefix tokens each pruning block keeps (``ceil``), in ``(0, 1]``.
        layers: indices of the pruning blocks.
        num_prefix_tokens: leading tokens (class token first, then registers) that are never pruned.
        sizes, merge_map, merged: as in :class:`ToMeState` (the fused token's size counts the tokens it
            absorbed; ``merge_map`` sends every pruned token to the fused token of its block).
    """

    keep_rate: float
    layers: tuple[int, ...]
    num_prefix_tokens: int

    @property
    def active(self) -> bool:
        """Whether any block can prune tokens."""
        return self.keep_rate < 1.0 and len(self.layers) > 0


class _ReductionAttention(Attention):
    """timm ``Attention`` split into projection, attention core and output, for the subclasses below."""

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(B, L, C)`` -> ``q, k, v`` ``(B, H, L, D)`` (after q/k norms) and the output gate."""
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        # (B, L, C) -> 3 x (B, H, L, D)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        return self.q_norm(q), self.k_norm(k), v, gate

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None, is_causal: bool
    ) -> torch.Tensor:
        """timm's attention core (fused SDPA or the explicit softmax) -> ``(B, H, L, D)``."""
        if self.fused_attn:
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=is_causal
            )
        if is_causal:
            raise NotImplementedError(f"{type(self).__name__}: is_causal is only supported with fused attention")
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, L, L)
        if attn_mask is not None:
            attn = attn + attn_mask
        return self.attn_drop(attn.softmax(dim=-1)) @ v

    def _output(self, x: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
        """``(B, H, L, D)`` -> ``(B, L, C)`` through timm's norm, gate and projection."""
        B, _, N, _ = x.shape
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class ToMeAttention(_ReductionAttention):
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
        q, k, v, gate = self._project(x)
        if sizes is not None:
            bias = proportional_attention_bias(sizes).to(q.dtype)  # (B, 1, 1, L)
            attn_mask = bias if attn_mask is None else attn_mask + bias
        x = self._output(self._attend(q, k, v, attn_mask, is_causal), gate)
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


class EViTAttention(_ReductionAttention):
    """timm ``Attention`` that also returns the class token's attention row averaged over heads."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attend over ``x`` ``(B, L, C)`` (class token first).

        Returns:
            ``(out, cls_attn)``: ``(B, L, C)`` as timm's ``Attention`` and fp32 ``(B, L)``
            ``mean_h softmax(q_0 . k_j * scale)``, computed apart from the (fused) attention.
        """
        q, k, v, gate = self._project(x)
        out = self._output(self._attend(q, k, v, attn_mask, is_causal), gate)
        logits = (q[:, :, :1].float() * self.scale) @ k.float().transpose(-2, -1)  # (B, H, 1, L)
        return out, logits.softmax(dim=-1).mean(dim=1)[:, 0]


class EViTBlock(Block):
    """timm ``Block`` that prunes (EViT) between attention and MLP; reads ``self._tome_state``."""

    _tome_state: EViTState

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        """``(B, L, C)`` -> ``(B, P + ceil(keep_rate * (L - P)) + 1, C)``; unchanged (timm's own block)
        when that keeps every token."""
        state = self._tome_state
        B, L, _ = x.shape
        P = state.num_prefix_tokens
        keep = evit_num_kept(L - P, state.keep_rate)
        if keep >= L - P:  # nothing to prune: timm's own block, bit for bit
            out = Attention.forward(self.attn, self.norm1(x), attn_mask=attn_mask, is_causal=is_causal)
            x = x + self.drop_path1(self.ls1(out))
            return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        if attn_mask is not None or is_causal:
            raise ValueError("EViT pruning cannot keep an attn_mask or is_causal aligned to pruned tokens")
        if state.merge_map is None:
            state.merge_map = torch.arange(L, device=x.device).expand(B, L).clone()
        out, cls_attn = self.attn(self.norm1(x))
        x = x + self.drop_path1(self.ls1(out))
        red = attentive_prune(x, cls_attn, keep, P, sizes=state.sizes, fuse=True)
        x, state.sizes = red.x, red.sizes
        state.merge_map = compose_merge_maps(state.merge_map, red.merge_map)
        state.merged = True
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class _ToMeVisionTransformer:
    """Mixin placed before the model's own class: resets the state per forward and pools by size."""

    _tome_state: ToMeState | EViTState
    _tome_original_class: type

    def _tome_begin(self) -> ToMeState | EViTState:
        """Reset the state for a new forward; refuse gradient checkpointing, whose recompute would re-merge."""
        state = self._tome_state
        if state.active and self.grad_checkpointing and torch.is_grad_enabled():  # type: ignore[attr-defined]
            raise NotImplementedError(
                "token reduction (ToMe r > 0, EViT keep_rate < 1) does not support grad_checkpointing: recomputed blocks would read "
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
        if state.active and kwargs.get("output_fmt", "NCHW") != "NLC":
            raise NotImplementedError("token reduction (r > 0): forward_intermediates needs output_fmt='NLC'")
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


def default_evit_layers(depth: int) -> tuple[int, ...]:
    """EViT's pruning blocks scaled to ``depth``: every ``depth // 4``-th from ``depth // 4`` (3, 6, 9 of 12)."""
    step = max(1, depth // 4)
    return tuple(range(step, depth, step))


def _check_blocks(model: VisionTransformer) -> None:
    for i, blk in enumerate(model.blocks):
        if type(blk) is not Block or type(blk.attn) is not Attention:
            raise TypeError(
                f"model.blocks[{i}] must be a timm Block with Attention, got {type(blk).__name__} with "
                f"{type(getattr(blk, 'attn', None)).__name__}"
            )


def _evit_layers(layers: Sequence[int] | None, depth: int) -> tuple[int, ...]:
    if layers is None:
        return default_evit_layers(depth)
    out = tuple(layers)
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < depth for i in out) or len(set(out)) != len(
        out
    ):
        raise ValueError(f"layers must be distinct block indices in [0, {depth}), got {layers!r}")
    return tuple(sorted(out))


def apply_token_reduction(
    model: VisionTransformer,
    method: str = "tome",
    r: int = 13,
    *,
    prop_attn: bool = True,
    keep_rate: float = 0.7,
    layers: Sequence[int] | None = None,
) -> VisionTransformer:
    """Patch a timm ``VisionTransformer`` (ViT, DeiT) in place to merge (ToMe) or prune (EViT) tokens.

    Parameters and ``state_dict`` are unchanged. Calling it again on a patched model re-patches it with the
    new settings (any method). After a forward, ``model._tome_state`` (:class:`ToMeState` or
    :class:`EViTState`) holds the final ``sizes`` ``(B, L', 1)`` and the composed ``merge_map`` ``(B, L)``
    over the first block's input tokens.

    Args:
        model: a timm ``VisionTransformer`` whose blocks are plain timm ``Block`` with ``Attention``.
        method: ``"tome"`` (merge ``r`` tokens in every block) or ``"evit"`` (prune in ``layers``).
        r: ToMe: tokens removed per block, ``>= 0``; ``0`` reproduces the unpatched model exactly.
        prop_attn: ToMe: proportional attention (``log(size)`` added to the logits of merged keys).
        keep_rate: EViT: fraction of non-prefix tokens kept per pruning block, in ``(0, 1]``; ``1``
            reproduces the unpatched model exactly. The model needs a class token.
        layers: EViT: pruning block indices (default :func:`default_evit_layers`).

    Returns:
        ``model`` itself, patched.
    """
    if method not in SUPPORTED_METHODS:
        raise NotImplementedError(f"token reduction method {method!r} is not supported; supported: {SUPPORTED_METHODS}")
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"model must be a timm VisionTransformer (or subclass), got {type(model).__name__}")
    if method == "tome" and (isinstance(r, bool) or not isinstance(r, int) or r < 0):
        raise ValueError(f"r must be an int >= 0, got {r!r}")
    if method == "evit":
        if isinstance(keep_rate, bool) or not isinstance(keep_rate, (int, float)) or not 0.0 < keep_rate <= 1.0:
            raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate!r}")
        if getattr(model, "cls_token", None) is None:
            raise ValueError("EViT ranks tokens by the class token's attention: the model needs a class token")
        layers = _evit_layers(layers, len(model.blocks))
    if isinstance(model, _ToMeVisionTransformer):
        remove_token_reduction(model)
    _check_blocks(model)
    P = model.num_prefix_tokens
    if method == "tome":
        state: ToMeState | EViTState = ToMeState(r=r, prop_attn=prop_attn, num_prefix_tokens=P)
        for i, blk in enumerate(model.blocks):
            blk.__class__ = ToMeBlock
            blk.attn.__class__ = ToMeAttention
            blk._tome_state, blk._tome_index = state, i
    else:
        state = EViTState(keep_rate=float(keep_rate), layers=layers, num_prefix_tokens=P)
        for i in layers:
            blk = model.blocks[i]
            blk.__class__ = EViTBlock
            blk.attn.__class__ = EViTAttention
            blk._tome_state = state
    model._tome_original_class = model.__class__
    model.__class__ = _tome_class(model.__class__)
    model._tome_state = state
    return model


def remove_token_reduction(model: VisionTransformer) -> VisionTransformer:
    """Undo :func:`apply_token_reduction` in place; returns ``model``. Raises if it was not patched."""
    if not isinstance(model, _ToMeVisionTransformer):
        raise ValueError(f"model ({type(model).__name__}) was not patched by apply_token_reduction")
    for blk in model.blocks:
        if isinstance(blk, (ToMeBlock, EViTBlock)):
            blk.__class__ = Block
            blk.attn.__class__ = Attention
            del blk._tome_state
            if hasattr(blk, "_tome_index"):
                del blk._tome_index
    model.__class__ = model._tome_original_class
    del model._tome_original_class, model._tome_state
    return model
