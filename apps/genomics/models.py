"""Registered DNA models: causal language models on :class:`~longseq.core.backbone.SequenceBackbone`.

Every constructor returns a :class:`~longseq.core.models.LanguageModel` over the
:class:`~longseq.apps.genomics.tokenizer.DNATokenizer` vocabulary (10 tokens) and takes
``**overrides``: fields of :class:`~longseq.core.backbone.BackboneConfig` (``dim``, ``depth``,
``mixer_pattern``, ``mixer_kwargs`` merged per mixer, ...), ``LanguageModel`` keywords
(``tie_embeddings``, ``loss_chunk_size``) and ``max_len``, the longest context, which sizes the
Hyena filters (other mixers need no maximum)::

    lm = create_model("hyena_dna_tiny", max_len=4096, depth=4)

Sizes follow the published checkpoints:

=====================  =======  =====  ========  =================================================
name                   d_model  depth  context   source
=====================  =======  =====  ========  =================================================
``hyena_dna_tiny``     128      2      1,024     HyenaDNA ``hyenadna-tiny-1k-seqlen``
``hyena_dna_small``    256      4      32,768    HyenaDNA ``hyenadna-small-32k-seqlen``
``hyena_dna_medium``   256      8      160,000   HyenaDNA ``hyenadna-medium-160k-seqlen``
``mamba_dna``          256      8      (any)     Mamba blocks, no MLP (Caduceus-sized, causal)
``mamba2_dna``         256      8      (any)     Mamba-2 blocks, no MLP
``hybrid_dna``         256      8      (any)     ``mamba2*3,attention`` + SwiGLU (HybriDNA/Jamba-style)
``transformer_dna``    256      8      (any)     causal attention (RoPE), backend ``"auto"``
=====================  =======  =====  ========  =================================================

HyenaDNA's blocks: LayerNorm (eps 1e-5), GELU MLP of width ``4 * d_model``, Hyena of order 2 with a
short filter of 3, a filter MLP of width 64 on 5 positional features and sine frequency 10.
For classification, :func:`dna_classifier` turns any of these (or a pretrained one) into a
:class:`SequenceBackbone` with a pooled :class:`~longseq.core.heads.ClassificationHead`.
"""

from __future__ import annotations

from typing import Any

from longseq.apps.genomics.tokenizer import DNATokenizer
from longseq.core.backbone import BackboneConfig, SequenceBackbone, parse_mixer_pattern
from longseq.core.models import LanguageModel, build_from_config
from longseq.core.registry import create_model, register_model

__all__ = [
    "DNA_VOCAB_SIZE",
    "dna_classifier",
    "hybrid_dna",
    "hyena_dna_medium",
    "hyena_dna_small",
    "hyena_dna_tiny",
    "mamba2_dna",
    "mamba_dna",
    "model_context",
    "transformer_dna",
]

DNA_VOCAB_SIZE = DNATokenizer.vocab_size
"""Vocabulary of every model here: the DNA tokenizer's 10 tokens."""

_HYENA_DNA = {"order": 2, "filter_order": 64, "short_filter_order": 3, "emb_dim": 5, "sin_freq": 10.0}


def _hyena_config(dim: int, depth: int, max_len: int) -> BackboneConfig:
    return BackboneConfig(
        vocab_size=DNA_VOCAB_SIZE,
        dim=dim,
        depth=depth,
        mixer_pattern="hyena",
        mixer_kwargs={"hyena": {**_HYENA_DNA, "max_len": max_len}},
        mlp="gelu",
        mlp_ratio=4.0,
        norm="layernorm",
        norm_eps=1e-5,
    )


def _build(defaults: BackboneConfig, overrides: dict[str, Any]) -> LanguageModel:
    """``build_from_config(LanguageModel, ...)`` after turning ``max_len`` into the Hyena filter length."""
    overrides = dict(overrides)
    max_len = overrides.pop("max_len", None)
    if max_len is not None:
        if int(max_len) < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        pattern = overrides.get("mixer_pattern", defaults.mixer_pattern)
        if "hyena" in parse_mixer_pattern(pattern):
            given = overrides.get("mixer_kwargs", {})
            bad = {k: type(v).__name__ for k, v in given.items() if not isinstance(v, dict)}
            if bad:
                raise TypeError(
                    f"mixer_kwargs maps a mixer name to its keyword arguments, e.g. "
                    f"{{'hyena': {{'filter_fp32': True}}}}; got non-dict values for {bad}"
                )
            kwargs = {k: dict(v) for k, v in given.items()}
            kwargs.setdefault("hyena", {})["max_len"] = int(max_len)
            overrides["mixer_kwargs"] = kwargs
    return build_from_config(LanguageModel, defaults, overrides)


def model_context(model: LanguageModel | SequenceBackbone) -> int | None:
    """Longest input the model accepts: the smallest Hyena ``max_len`` of its blocks, or None (no limit)."""
    backbone = model.backbone if isinstance(model, LanguageModel) else model
    limits = [
        int(b.mixer.config.max_len) for b in backbone.blocks if hasattr(getattr(b.mixer, "config", None), "max_len")
    ]
    return min(limits) if limits else None


@register_model
def hyena_dna_tiny(**overrides: Any) -> LanguageModel:
    """HyenaDNA tiny: d_model 128, 2 layers, 1,024-base context (~0.4M parameters)."""
    return _build(_hyena_config(128, 2, 1024), overrides)


@register_model
def hyena_dna_small(**overrides: Any) -> LanguageModel:
    """HyenaDNA small: d_model 256, 4 layers, 32,768-base context (~3.3M parameters)."""
    return _build(_hyena_config(256, 4, 32768), overrides)


@register_model
def hyena_dna_medium(**overrides: Any) -> LanguageModel:
    """HyenaDNA medium: d_model 256, 8 layers, 160,000-base context (~6.6M parameters)."""
    return _build(_hyena_config(256, 8, 160_000), overrides)


@register_model
def mamba_dna(**overrides: Any) -> LanguageModel:
    """Causal Mamba LM: d_model 256, 8 Mamba blocks (d_state 16, expand 2) without MLP, RMSNorm."""
    cfg = BackboneConfig(
        vocab_size=DNA_VOCAB_SIZE, dim=256, depth=8, mixer_pattern="mamba", mixer_kwargs={"mamba": {}}, mlp="none"
    )
    return _build(cfg, overrides)


@register_model
def mamba2_dna(**overrides: Any) -> LanguageModel:
    """Causal Mamba-2 LM: d_model 256, 8 Mamba-2 blocks (d_state 64, head dim 64) without MLP."""
    cfg = BackboneConfig(
        vocab_size=DNA_VOCAB_SIZE,
        dim=256,
        depth=8,
        mixer_pattern="mamba2",
        mixer_kwargs={"mamba2": {"d_state": 64, "headdim": 64}},
        mlp="none",
    )
    return _build(cfg, overrides)


@register_model
def hybrid_dna(**overrides: Any) -> LanguageModel:
    """Hybrid LM: d_model 256, 8 layers of ``mamba2*3,attention`` (causal attention every 4th layer,
    8 heads, RoPE) with SwiGLU MLPs; change the ratio with ``mixer_pattern="mamba2*k,attention"``."""
    cfg = BackboneConfig(
        vocab_size=DNA_VOCAB_SIZE,
        dim=256,
        depth=8,
        mixer_pattern="mamba2*3,attention",
        mixer_kwargs={"mamba2": {"d_state": 64, "headdim": 64}, "attention": {"num_heads": 8, "causal": True}},
        mlp="swiglu",
    )
    return _build(cfg, overrides)


@register_model
def transformer_dna(**overrides: Any) -> LanguageModel:
    """Causal transformer LM: d_model 256, 8 layers, 8 heads, RoPE, SwiGLU; attention backend ``"auto"``
    (flash on CUDA, SDPA elsewhere; ``$LONGSEQ_ATTN_BACKEND`` overrides)."""
    cfg = BackboneConfig(
        vocab_size=DNA_VOCAB_SIZE,
        dim=256,
        depth=8,
        mixer_pattern="attention",
        mixer_kwargs={"attention": {"num_heads": 8, "causal": True, "backend": "auto"}},
        mlp="swiglu",
    )
    return _build(cfg, overrides)


def dna_classifier(
    model: str | LanguageModel | SequenceBackbone,
    num_classes: int,
    *,
    pool: str = "mean",
    head_drop: float = 0.0,
    **overrides: Any,
) -> SequenceBackbone:
    """A sequence classifier: the backbone of a registered DNA model (a name, built with ``overrides``)
    or of a given (e.g. pretrained) model, with a new pooled classification head.

    Args:
        model: a registered model name, a :class:`LanguageModel` (its backbone is taken, weights kept)
            or a :class:`SequenceBackbone`.
        num_classes: classes (>= 2).
        pool: ``"mean"``, ``"last"``, ``"cls"`` or ``"attention"`` pooling (:mod:`longseq.core.heads`).
        head_drop: dropout before the classifier.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if isinstance(model, str):
        model = create_model(model, **overrides)
    elif overrides:
        raise TypeError(f"overrides {sorted(overrides)} apply to a model name only, not to a built model")
    if isinstance(model, LanguageModel):
        backbone = model.backbone
    elif isinstance(model, SequenceBackbone):
        backbone = model
    else:
        raise TypeError(f"expected a LanguageModel or SequenceBackbone, got {type(model).__name__}")
    backbone.cfg = backbone.cfg.replace(head_drop=head_drop)
    backbone.reset_classifier(num_classes, pool)
    return backbone
