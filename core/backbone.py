"""``SequenceBackbone``: embedding, a stack of :class:`~longseq.core.block.Block`, a final norm and a head,
configured by a typed :class:`BackboneConfig`.

The mixer of each block comes from ``BackboneConfig.mixer_pattern``, a small grammar over
registered mixer names (see :func:`parse_mixer_pattern`), so hybrids are configuration::

    BackboneConfig(vocab_size=16, dim=256, depth=8, mixer_pattern="mamba2*3,attention")
    # -> mamba2 mamba2 mamba2 attention mamba2 mamba2 mamba2 attention

The interface follows timm: ``forward_features``, ``forward_head``, ``forward_intermediates``,
``num_prefix_tokens``, ``set_grad_checkpointing``, ``reset_classifier``. Inputs are padded
``(B, L)`` token ids / ``(B, L, input_dim)`` features, or packed ``(T,)`` / ``(T, input_dim)`` with a
:class:`~longseq.core.packing.PackedBatch` (or the ``PackedBatch`` itself).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from longseq.core.block import Block
from longseq.core.heads import POOLS, ClassificationHead, TokenRegressionHead
from longseq.core.mlp import MLPS, create_mlp
from longseq.core.norms import NORMS, create_norm
from longseq.core.packing import PackedBatch, position_ids_from_cu_seqlens, segment_ids
from longseq.core.registry import create_mixer, list_mixers

__all__ = ["BackboneConfig", "SequenceBackbone", "parse_mixer_pattern", "resolve_indices"]

_ITEM = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\*([0-9]+))?$")


def parse_mixer_pattern(pattern: str, depth: int | None = None) -> list[str]:
    """Expand a mixer pattern into one mixer name per layer.

    Grammar (whitespace ignored)::

        pattern := item ("," item)*
        item    := NAME ("*" COUNT)?      NAME: a registered mixer, COUNT: a positive integer

    The expanded unit is repeated ``depth / len(unit)`` times; ``depth`` must be a multiple of the
    unit's length. ``depth=None`` returns the unit once. Names are not checked here (see
    :class:`BackboneConfig`).
    """
    items = [s.strip() for s in pattern.replace(" ", "").split(",")]
    unit: list[str] = []
    for item in items:
        m = _ITEM.match(item)
        if m is None or (m.group(2) is not None and int(m.group(2)) < 1):
            raise ValueError(
                f"bad mixer pattern {pattern!r}: item {item!r} is not NAME or NAME*COUNT (COUNT >= 1); "
                "example: 'mamba2*3,attention'"
            )
        unit += [m.group(1)] * int(m.group(2) or 1)
    if depth is None:
        return unit
    if depth < 1 or depth % len(unit):
        raise ValueError(
            f"mixer pattern {pattern!r} has {len(unit)} layers per repeat, which does not divide depth {depth}"
        )
    return unit * (depth // len(unit))


@dataclass
class BackboneConfig:
    """Configuration of a :class:`SequenceBackbone`, validated on creation.

    Attributes:
        dim: model width D.
        depth: number of blocks.
        mixer_pattern: per-layer mixers, e.g. ``"attention"`` or ``"mamba2*3,attention"``
            (:func:`parse_mixer_pattern`).
        mixer_kwargs: keyword arguments per mixer name, e.g. ``{"attention": {"num_heads": 8}}``
            (``dim`` is passed by the backbone). Positions (RoPE, ...) belong to the mixers.
        vocab_size: token input: an embedding table of this size. Leave ``None`` for continuous input.
        input_dim: continuous input ``(..., input_dim)`` through a linear embedding. With neither
            ``vocab_size`` nor ``input_dim`` the input must already be ``(..., dim)`` features.
        mlp: ``"swiglu"``, ``"gelu"`` or ``"none"`` (mixer-only blocks).
        mlp_ratio: MLP hidden size as a multiple of ``dim`` (SwiGLU scales it by 2/3).
        norm: ``"rmsnorm"`` or ``"layernorm"``, used in blocks and as the final norm.
        norm_eps: the norms' epsilon.
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks.
        num_prefix_tokens: learned tokens (CLS, registers) prepended to every sequence.
        num_classes: head outputs; 0 for features (no head).
        pool: ``"mean"``, ``"cls"``, ``"last"``, ``"attention"`` for one output per sequence, or
            ``"none"`` for per-token outputs (regression, tagging).
        head_drop: dropout before the head's linear layer.
    """

    dim: int = 256
    depth: int = 4
    mixer_pattern: str = "attention"
    mixer_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    vocab_size: int | None = None
    input_dim: int | None = None
    mlp: str = "swiglu"
    mlp_ratio: float = 4.0
    norm: str = "rmsnorm"
    norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    num_prefix_tokens: int = 0
    num_classes: int = 0
    pool: str = "mean"
    head_drop: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.vocab_size is not None and self.input_dim is not None:
            raise ValueError("give vocab_size (token input) or input_dim (continuous input), not both")
        for name in ("vocab_size", "input_dim"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        names = self.mixer_names()
        known = list_mixers()
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(
                f"mixer pattern {self.mixer_pattern!r} names unknown mixers {unknown}; registered: {known}"
            )
        extra = sorted(set(self.mixer_kwargs) - set(names))
        if extra:
            raise ValueError(
                f"mixer_kwargs has entries {extra} for mixers the pattern does not use ({sorted(set(names))})"
            )
        if self.mlp not in (*MLPS, "none"):
            raise ValueError(f"mlp must be one of {[*MLPS, 'none']}, got {self.mlp!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {self.norm!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.num_prefix_tokens < 0 or self.num_classes < 0:
            raise ValueError(
                f"num_prefix_tokens and num_classes must be >= 0, got {self.num_prefix_tokens} and {self.num_classes}"
            )
        if self.pool not in (*POOLS, "none"):
            raise ValueError(f"pool must be one of {[*POOLS, 'none']}, got {self.pool!r}")

    def mixer_names(self) -> list[str]:
        """The mixer name of each of the ``depth`` layers."""
        return parse_mixer_pattern(self.mixer_pattern, self.depth)

    def replace(self, **changes: Any) -> BackboneConfig:
        """A validated copy with ``changes``; ``mixer_kwargs`` are merged per mixer name."""
        if "mixer_kwargs" in changes:
            merged = {k: dict(v) for k, v in self.mixer_kwargs.items()}
            for name, kwargs in changes["mixer_kwargs"].items():
                merged.setdefault(name, {}).update(kwargs)
            changes["mixer_kwargs"] = merged
        return dataclasses.replace(self, **changes)


def resolve_indices(num_blocks: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """Block indices for ``forward_intermediates``: ``None`` all, an int ``n`` the last ``n``, or a
    list (negative indices count from the end)."""
    if indices is None:
        return list(range(num_blocks))
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"asked for the last {indices} blocks of {num_blocks}")
        return list(range(num_blocks - indices, num_blocks))
    out = sorted({i % num_blocks if -num_blocks <= i < num_blocks else i for i in indices})
    bad = [i for i in out if not 0 <= i < num_blocks]
    if bad:
        raise ValueError(f"block indices {bad} out of range for {num_blocks} blocks")
    return out


class SequenceBackbone(nn.Module):
    """Embedding -> prefix tokens -> blocks -> final norm -> head (identity when ``num_classes == 0``).

    ``forward_features`` returns ``(B, P + L, D)`` padded or ``(T + N*P, D)`` packed features, P =
    ``num_prefix_tokens`` (prepended to each sequence); ``forward_head`` pools or maps them.
    """

    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_features = self.embed_dim = cfg.dim
        self.num_prefix_tokens = cfg.num_prefix_tokens
        self.grad_checkpointing = False
        if cfg.vocab_size is not None:
            self.embed: nn.Module = nn.Embedding(cfg.vocab_size, cfg.dim)
            nn.init.trunc_normal_(self.embed.weight, std=0.02)
        elif cfg.input_dim is not None:
            self.embed = nn.Linear(cfg.input_dim, cfg.dim)
        else:
            self.embed = nn.Identity()
        self.prefix_tokens = (
            nn.Parameter(torch.randn(cfg.num_prefix_tokens, cfg.dim) * 0.02) if cfg.num_prefix_tokens else None
        )
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]  # linear 0 -> rate
        norm = partial(create_norm, cfg.norm, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(
            Block(
                cfg.dim,
                create_mixer(name, dim=cfg.dim, **cfg.mixer_kwargs.get(name, {})),
                create_mlp(cfg.mlp, cfg.dim, hidden_ratio=cfg.mlp_ratio),
                norm=norm,
                drop_path=rate,
            )
            for name, rate in zip(cfg.mixer_names(), rates)
        )
        self.norm = norm(cfg.dim)
        self.head: nn.Module = nn.Identity()
        self.reset_classifier(cfg.num_classes, cfg.pool)

    # ---------------------------------------------------------------- timm-style interface

    def reset_classifier(self, num_classes: int, pool: str | None = None) -> None:
        """Replace the head: ``num_classes`` outputs (0: features) with ``pool`` (default: keep)."""
        pool = self.cfg.pool if pool is None else pool
        self.cfg = self.cfg.replace(num_classes=num_classes, pool=pool)
        if pool == "none":
            self.head = TokenRegressionHead(self.cfg.dim, num_classes, drop=self.cfg.head_drop)
        else:
            self.head = ClassificationHead(
                self.cfg.dim, num_classes, pool, num_prefix_tokens=self.num_prefix_tokens, drop=self.cfg.head_drop
            )

    def get_classifier(self) -> nn.Module:
        """The head's final linear layer (identity without classes)."""
        return self.head.fc

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward (``torch.utils.checkpoint``, non-reentrant)."""
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set[str]:
        """Parameter names optimisers should not decay (timm convention)."""
        return {"prefix_tokens"} if self.prefix_tokens is not None else set()

    # ---------------------------------------------------------------- helpers

    def prefixed(self, packed: PackedBatch | None, feats: torch.Tensor | None = None) -> PackedBatch | None:
        """Boundaries of the features ``forward_features`` returns for input boundaries ``packed``
        (each sequence grows by ``num_prefix_tokens``), around ``feats`` when given."""
        p = self.num_prefix_tokens
        if packed is None or p == 0:
            return packed
        n = packed.num_seqs
        cu = packed.cu_seqlens + p * torch.arange(n + 1, device=packed.cu_seqlens.device, dtype=torch.int32)
        total = packed.num_tokens + n * p
        if feats is None:
            feats = packed.x.new_empty((total, 0))  # boundaries only
        elif feats.shape[0] != total:
            raise ValueError(f"features must have {total} rows (tokens plus prefix tokens), got {feats.shape[0]}")
        return PackedBatch(feats, cu, packed.max_seqlen + p, position_ids_from_cu_seqlens(cu, total), check=False)

    def _embed(self, x: torch.Tensor, packed: PackedBatch | None) -> torch.Tensor:
        if isinstance(self.embed, nn.Embedding):
            want = 1 if packed is not None else 2
            if x.dim() != want or x.is_floating_point():
                raise ValueError(
                    f"token input must be integer ids {'(T,)' if want == 1 else '(B, L)'}, got {x.dtype} {tuple(x.shape)}"
                )
        else:
            width = self.cfg.input_dim or self.cfg.dim
            want = 2 if packed is not None else 3
            if x.dim() != want or x.shape[-1] != width:
                raise ValueError(
                    f"continuous input must be {'(T, ' if want == 2 else '(B, L, '}{width}), got {tuple(x.shape)}"
                )
        return self.embed(x)

    def _add_prefix(self, h: torch.Tensor, packed: PackedBatch | None, out: PackedBatch | None) -> torch.Tensor:
        if self.prefix_tokens is None:
            return h
        p, d = self.prefix_tokens.shape
        if packed is None:  # (B, L, D) -> (B, P + L, D)
            return torch.cat([self.prefix_tokens.expand(h.shape[0], p, d).to(h.dtype), h], dim=1)
        n = packed.num_seqs
        seg = segment_ids(packed.cu_seqlens, h.shape[0])
        token_rows = torch.arange(h.shape[0], device=h.device) + p * (seg + 1)  # (T,)
        prefix_rows = (out.cu_seqlens[:-1, None] + torch.arange(p, device=h.device)).reshape(-1).long()  # (N*P,)
        new = h.new_zeros(out.num_tokens, d).index_copy(0, token_rows, h)
        return new.index_copy(0, prefix_rows, self.prefix_tokens.to(h.dtype).repeat(n, 1))  # (T + N*P, D)

    @staticmethod
    def _split(x: torch.Tensor | PackedBatch, packed: PackedBatch | None) -> tuple[torch.Tensor, PackedBatch | None]:
        if isinstance(x, PackedBatch):
            if packed is not None:
                raise ValueError("pass either a PackedBatch as input or packed=..., not both")
            return x.x, x
        return x, packed

    def _run_block(self, block: Block, h: torch.Tensor, packed: PackedBatch | None, cache: Any) -> torch.Tensor:
        if self.grad_checkpointing and cache is None and torch.is_grad_enabled():
            return checkpoint(block, h, packed=packed, cache=None, use_reentrant=False)
        return block(h, packed=packed, cache=cache)

    # ---------------------------------------------------------------- forward

    def forward_features(
        self, x: torch.Tensor | PackedBatch, *, packed: PackedBatch | None = None, cache: list[Any] | None = None
    ) -> torch.Tensor:
        """Normed features ``(B, P + L, D)``, or ``(T + N*P, D)`` for packed input.

        ``cache`` (from :meth:`allocate_cache`, padded input only) is filled by the prefill.
        """
        x, packed = self._split(x, packed)
        out_packed = self.prefixed(packed)
        h = self._add_prefix(self._embed(x, packed), packed, out_packed)
        out_packed = None if out_packed is None else out_packed.with_x(h)
        for i, block in enumerate(self.blocks):
            h = self._run_block(block, h, out_packed, None if cache is None else cache[i])
        return self.norm(h)

    def forward_head(
        self,
        feats: torch.Tensor,
        *,
        packed: PackedBatch | None = None,
        mask: torch.Tensor | None = None,
        pre_logits: bool = False,
    ) -> torch.Tensor:
        """Head on ``forward_features`` output; ``packed``/``mask`` describe the *input* (before prefix tokens).

        Pooled heads give ``(B|N, num_classes)``; the per-token head (``pool="none"``) gives outputs
        aligned with the input tokens, ``(B, L, num_classes)`` or ``(T, num_classes)``, prefix tokens removed.
        """
        if self.cfg.pool == "none":
            return self.head(self.strip_prefix(feats, packed)[0], pre_logits=pre_logits)
        if mask is not None and self.num_prefix_tokens:
            mask = torch.nn.functional.pad(mask, (self.num_prefix_tokens, 0), value=True)
        return self.head(feats, packed=self.prefixed(packed, feats), mask=mask, pre_logits=pre_logits)

    def forward(
        self,
        x: torch.Tensor | PackedBatch,
        *,
        packed: PackedBatch | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward_head(forward_features(x))``.

        ``mask`` (bool ``(B, L)``, True at real tokens) is used by the head's pooling only: mixers see
        every position, so a padded batch is exact only for causal mixers with right padding. For
        sequences of different lengths pass them packed, which is exact for every mixer.
        """
        x, packed = self._split(x, packed)
        return self.forward_head(self.forward_features(x, packed=packed), packed=packed, mask=mask)

    def strip_prefix(
        self, feats: torch.Tensor, packed: PackedBatch | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Split features into ``(tokens, prefix)``: ``(B, L, D)`` and ``(B, P, D)`` padded, or ``(T, D)``
        and ``(N, P, D)`` packed (``packed`` = the input boundaries). ``prefix`` is ``None`` when P = 0."""
        p = self.num_prefix_tokens
        if p == 0:
            return feats, None
        if packed is None:
            return feats[:, p:], feats[:, :p]
        out = self.prefixed(packed, feats)
        is_prefix = out.position_ids < p  # (T + N*P,)
        return feats[~is_prefix], feats[is_prefix].view(packed.num_seqs, p, -1)

    def forward_intermediates(
        self,
        x: torch.Tensor | PackedBatch,
        indices: int | list[int] | tuple[int, ...] | None = None,
        *,
        packed: PackedBatch | None = None,
        norm: bool = False,
        stop_early: bool = False,
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """Outputs of selected blocks (timm's interface).

        Args:
            x, packed: as for :meth:`forward_features`.
            indices: ``None`` (all blocks), ``n`` (the last n) or a list of block indices.
            norm: apply the final norm to each intermediate.
            stop_early: run blocks only up to the last selected one.
            intermediates_only: return only the list.
            return_prefix_tokens: each intermediate becomes ``(tokens, prefix)`` (see :meth:`strip_prefix`).

        Returns:
            ``(final_features, intermediates)`` or ``intermediates``; each intermediate is
            ``(B, L, D)`` padded or ``(T, D)`` packed with prefix tokens removed.
        """
        x, packed = self._split(x, packed)
        take = resolve_indices(len(self.blocks), indices)
        out_packed = self.prefixed(packed)
        h = self._add_prefix(self._embed(x, packed), packed, out_packed)
        out_packed = None if out_packed is None else out_packed.with_x(h)
        blocks = self.blocks[: take[-1] + 1] if stop_early or intermediates_only else self.blocks
        intermediates: list[Any] = []
        for i, block in enumerate(blocks):
            h = self._run_block(block, h, out_packed, None)
            if i in take:
                tokens, prefix = self.strip_prefix(self.norm(h) if norm else h, packed)
                intermediates.append((tokens, prefix) if return_prefix_tokens else tokens)
        if intermediates_only:
            return intermediates
        return self.norm(h), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop blocks after the last of ``indices`` (and optionally the final norm and the head);
        returns the kept indices."""
        take = resolve_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: take[-1] + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0)
        return take

    # ---------------------------------------------------------------- decoding

    def allocate_cache(
        self,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> list[Any]:
        """One cache per block for ``batch_size`` sequences of up to ``max_len`` input tokens (prefix
        tokens are added); dtype and device default to the parameters'."""
        ref = next(self.parameters())
        dtype = ref.dtype if dtype is None else dtype
        device = ref.device if device is None else torch.device(device)
        total = max_len + self.num_prefix_tokens
        return [block.allocate_cache(batch_size, total, dtype=dtype, device=device) for block in self.blocks]

    def step(self, x_t: torch.Tensor, cache: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """One decoding step: ``x_t`` ``(B,)`` ids or ``(B, input_dim)`` -> normed features ``(B, D)``.

        ``cache`` must have been filled by ``forward_features(prompt, cache=cache)``; it is updated
        in place (and returned).
        """
        h = self.embed(x_t)  # (B, D)
        for i, block in enumerate(self.blocks):
            h, cache[i] = block.step(h, cache[i])
        return self.norm(h), cache
