"""Generic registered models: causal language models and a sequence classifier on :class:`SequenceBackbone`.

Each constructor takes ``**overrides``: fields of :class:`~longseq.core.backbone.BackboneConfig`
(``mixer_kwargs`` merged per mixer) plus the model's own keyword arguments::

    lm = create_model("transformer_lm_tiny", vocab_size=16, depth=4)
    hybrid = create_model("transformer_lm_tiny", mixer_pattern="mamba2*3,attention", depth=8)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from longseq.core.backbone import BackboneConfig, SequenceBackbone, parse_mixer_pattern
from longseq.core.heads import LMHead
from longseq.core.packing import PackedBatch, next_token_labels
from longseq.core.registry import register_model

__all__ = [
    "LanguageModel",
    "build_from_config",
    "sequence_classifier_tiny",
    "transformer_lm_small",
    "transformer_lm_tiny",
]


class LanguageModel(nn.Module):
    """A causal LM: :class:`SequenceBackbone` (token input, no head) + :class:`~longseq.core.heads.LMHead`.

    Implements the decoder protocol of :func:`longseq.core.generation.generate`
    (``__call__(ids, cache=...)``, ``allocate_cache``, ``step``).

    Args:
        cfg: backbone config; needs ``vocab_size``, and no prefix tokens or head.
        tie_embeddings: share the LM head's weight with the token embedding.
        loss_chunk_size: tokens per chunk of the chunked cross-entropy.
        ignore_index: label value that adds no loss.
    """

    def __init__(
        self,
        cfg: BackboneConfig,
        *,
        tie_embeddings: bool = True,
        loss_chunk_size: int = 4096,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("a LanguageModel needs token input: set vocab_size in the config")
        if cfg.num_prefix_tokens or cfg.num_classes:
            raise ValueError(
                "a LanguageModel takes no prefix tokens and no backbone head, got "
                f"num_prefix_tokens={cfg.num_prefix_tokens}, num_classes={cfg.num_classes}"
            )
        self.cfg = cfg
        self.backbone = SequenceBackbone(cfg.replace(pool="none"))
        tied = self.backbone.embed.weight if tie_embeddings else None
        self.lm_head = LMHead(cfg.dim, cfg.vocab_size, tie_weight=tied, chunk_size=loss_chunk_size)
        self.ignore_index = ignore_index

    def forward(
        self,
        input_ids: torch.Tensor | PackedBatch,
        *,
        packed: PackedBatch | None = None,
        labels: torch.Tensor | None = None,
        cache: list[Any] | None = None,
    ) -> torch.Tensor:
        """Logits ``(B, L, V)`` / ``(T, V)``, or the mean next-token loss when ``labels`` are given.

        Args:
            input_ids: ``(B, L)`` ids, packed ``(T,)`` ids with ``packed``, or a :class:`PackedBatch`.
            labels: aligned with ``input_ids`` (usually the ids themselves, ``ignore_index`` where no
                loss is wanted); position t is trained to predict ``labels[t + 1]`` of the same
                sequence. The loss is computed in chunks, without full logits.
            cache: decoding cache to fill (prefill), from :meth:`allocate_cache`.
        """
        h = self.backbone.forward_features(input_ids, packed=packed, cache=cache)
        if isinstance(input_ids, PackedBatch):
            packed = input_ids
        if labels is None:
            return self.lm_head(h)
        if labels.shape != h.shape[:-1]:
            raise ValueError(f"labels must have the input's shape {tuple(h.shape[:-1])}, got {tuple(labels.shape)}")
        targets = next_token_labels(labels, None if packed is None else packed.cu_seqlens, self.ignore_index)
        return self.lm_head.loss(h, targets, ignore_index=self.ignore_index)

    def allocate_cache(
        self,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> list[Any]:
        """Decoding cache for ``batch_size`` sequences of up to ``max_len`` tokens."""
        return self.backbone.allocate_cache(batch_size, max_len, dtype=dtype, device=device)

    def step(self, ids_t: torch.Tensor, cache: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """One token per sequence ``(B,)`` -> next-token logits ``(B, V)`` and the updated cache."""
        h, cache = self.backbone.step(ids_t, cache)
        return self.lm_head(h), cache


def build_from_config(cls: type[nn.Module], defaults: BackboneConfig, overrides: dict[str, Any]) -> nn.Module:
    """``cls(defaults.replace(**config_overrides), **other_overrides)``: keyword overrides that name a
    config field change the config (``mixer_kwargs`` merged per mixer; a new ``mixer_pattern`` drops
    the defaults of mixers it no longer uses), the rest go to the model's constructor."""
    fields = {f.name for f in dataclasses.fields(BackboneConfig)}
    cfg_changes = {k: v for k, v in overrides.items() if k in fields}
    model_kwargs = {k: v for k, v in overrides.items() if k not in fields}
    if "mixer_pattern" in cfg_changes:  # default kwargs of mixers the new pattern drops no longer apply
        used = set(parse_mixer_pattern(cfg_changes["mixer_pattern"]))
        kept = {name: kw for name, kw in defaults.mixer_kwargs.items() if name in used}
        defaults = dataclasses.replace(defaults, mixer_kwargs=kept)
    cfg = defaults.replace(**cfg_changes)
    if cls is SequenceBackbone:
        if model_kwargs:
            raise TypeError(f"unknown overrides {sorted(model_kwargs)}; config fields: {sorted(fields)}")
        return cls(cfg)
    return cls(cfg, **model_kwargs)


def _attention(num_heads: int, causal: bool) -> dict[str, dict[str, Any]]:
    return {"attention": {"num_heads": num_heads, "causal": causal}}


@register_model
def transformer_lm_tiny(**overrides: Any) -> LanguageModel:
    """A 2-layer, 64-wide causal transformer LM over 256 byte tokens (tests, smoke runs)."""
    cfg = BackboneConfig(vocab_size=256, dim=64, depth=2, mixer_kwargs=_attention(4, causal=True))
    return build_from_config(LanguageModel, cfg, overrides)


@register_model
def transformer_lm_small(**overrides: Any) -> LanguageModel:
    """An 8-layer, 512-wide causal transformer LM (32k vocabulary)."""
    cfg = BackboneConfig(vocab_size=32000, dim=512, depth=8, mixer_kwargs=_attention(8, causal=True))
    return build_from_config(LanguageModel, cfg, overrides)


@register_model
def sequence_classifier_tiny(**overrides: Any) -> SequenceBackbone:
    """A 2-layer, 64-wide bidirectional transformer classifier (mean pooling, 2 classes) over 256 tokens."""
    cfg = BackboneConfig(
        vocab_size=256, dim=64, depth=2, mixer_kwargs=_attention(4, causal=False), num_classes=2, pool="mean"
    )
    return build_from_config(SequenceBackbone, cfg, overrides)
