"""Autoregressive generation with decoding caches, for any model following :class:`DecoderProtocol`.

Prompts of different lengths share one batch without padding ever entering a cache: the common
prefix (the shortest prompt's length) is prefilled in parallel, then the batch advances one position
per step; a sequence whose prompt is longer is fed its own next prompt token (teacher forcing) until
its prompt is used up, and only then starts sampling. Every sequence therefore sees exactly the
tokens it would see alone, and mixers need nothing beyond the protocol (``forward(x, cache=...)`` as
prefill, ``step``). Prompts of very different lengths cost extra steps; sort or bucket them by length
for throughput.

Caches: a model's cache is whatever its ``allocate_cache`` returns; ``LanguageModel`` keeps one per
block, made by the block's mixer through the mixer protocol (``longseq.core.mixers.base``):
attention's KV cache, and the conv/SSM state that Mamba and Hyena mixers implement the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "DecoderProtocol",
    "GenerationConfig",
    "GenerationOutput",
    "generate",
    "sample_next_token",
    "top_k_filter",
    "top_p_filter",
]


@runtime_checkable
class DecoderProtocol(Protocol):
    """What :func:`generate` needs from a model (``LanguageModel`` implements it)."""

    def __call__(self, input_ids: torch.Tensor, *, cache: Any = None) -> torch.Tensor:
        """``(B, L)`` ids -> logits ``(B, L, V)``; fills ``cache`` when given (prefill)."""
        ...

    def allocate_cache(
        self, batch_size: int, max_len: int, dtype: torch.dtype | None = None, device: Any = None
    ) -> Any:
        """A fresh cache for ``batch_size`` sequences of up to ``max_len`` tokens."""
        ...

    def step(self, ids_t: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """``(B,)`` ids -> next-token logits ``(B, V)`` and the cache."""
        ...


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings.

    Attributes:
        max_new_tokens: tokens to generate per sequence (at most; stop tokens end earlier).
        temperature: softmax temperature; 0 is greedy (argmax).
        top_k: sample among the k most likely tokens (``None`` or 0: off).
        top_p: nucleus sampling: the smallest set of tokens whose probability reaches p (``None`` or 1: off).
        stop_tokens: token ids that end a sequence; the stop token is part of the output.
        pad_id: fills the output after a sequence's end.
        seed: seeds a private generator so results repeat; ``None`` uses torch's global RNG.
        use_cache: decode with the model's cache; ``False`` recomputes the whole prefix every step
            (slow; a reference for tests).
        output_logits: also return the raw logits of every generated position.
    """

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop_tokens: tuple[int, ...] = ()
    pad_id: int = 0
    seed: int | None = None
    use_cache: bool = True
    output_logits: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, got {self.top_p}")
        object.__setattr__(self, "stop_tokens", tuple(int(t) for t in self.stop_tokens))


@dataclass
class GenerationOutput:
    """What :func:`generate` returns.

    Attributes:
        tokens: ``(B, max_new_tokens)`` generated ids (prompts excluded), ``pad_id`` after each end.
        lengths: ``(B,)`` generated tokens per sequence (a stop token counts).
        logits: ``(B, max_new_tokens, V)`` fp32 logits that produced each token (before temperature
            and filtering), NaN after each end; only with ``output_logits``.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    logits: torch.Tensor | None = None

    def sequences(self) -> list[torch.Tensor]:
        """The generated ids of each sequence, without padding."""
        return [t[:n] for t, n in zip(self.tokens, self.lengths.tolist())]


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """``logits`` ``(..., V)`` with all but the ``k`` largest per row set to ``-inf`` (ties at the
    k-th value are kept). ``None``, 0 or ``k >= V`` returns the input."""
    if not k or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sum reaches ``p``
    (always at least the most likely one); others become ``-inf``. ``None`` or 1 returns the input."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.float().softmax(-1)
    before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
    remove_sorted = before >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token per row of ``logits`` ``(B, V)``: argmax when ``temperature == 0``, else a sample
    from the temperature-scaled, top-k then top-p filtered softmax. Returns int64 ``(B,)``."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p)
    return torch.multinomial(scaled.softmax(-1), 1, generator=generator).squeeze(1)


def _prompt_matrix(
    prompts: torch.Tensor | Sequence[torch.Tensor | Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids (B, Lmax) right-padded with pad_id, lengths (B,))``."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2 or prompts.shape[1] == 0 or prompts.is_floating_point():
            raise ValueError(
                f"prompt tensor must be integer ids (B, L) with L >= 1, got {prompts.dtype} {tuple(prompts.shape)}"
            )
        ids = prompts.to(device=device, dtype=torch.long)
        return ids, torch.full((ids.shape[0],), ids.shape[1], device=device)
    rows = [torch.as_tensor(p, dtype=torch.long, device=device).reshape(-1) for p in prompts]
    if not rows or any(r.numel() == 0 for r in rows):
        raise ValueError(
            f"need at least one prompt and every prompt non-empty, got lengths {[r.numel() for r in rows]}"
        )
    lengths = torch.tensor([r.numel() for r in rows], device=device)
    ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_id)
    return ids, lengths


@torch.no_grad()
def generate(
    model: DecoderProtocol,
    prompts: torch.Tensor | Sequence[torch.Tensor | Sequence[int]],
    config: GenerationConfig | None = None,
    *,
    generator: torch.Generator | None = None,
    **overrides: Any,
) -> GenerationOutput:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: a decoder (``LanguageModel`` or anything with the :class:`DecoderProtocol`); put it in
            ``eval()`` mode first unless dropout while decoding is wanted.
        prompts: ``(B, L)`` ids, or a list of B prompts of any lengths (tensors or lists of ids).
        config: decoding settings; keyword ``overrides`` replace its fields
            (``generate(model, p, max_new_tokens=8, temperature=0)``).
        generator: a ``torch.Generator`` for sampling (overrides ``config.seed``). A seed repeats a
            run exactly for the same prompts; every row draws at every step, so changing the batch
            changes each row's random stream (greedy decoding does not depend on the batch).

    Returns:
        A :class:`GenerationOutput` with the new tokens of each sequence and their counts.
    """
    config = GenerationConfig() if config is None else config
    known = {f.name for f in fields(GenerationConfig)}
    if set(overrides) - known:
        raise TypeError(f"unknown generation options {sorted(set(overrides) - known)}; known: {sorted(known)}")
    cfg = replace(config, **overrides)
    device = next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    ids, lengths = _prompt_matrix(prompts, cfg.pad_id, device)
    if generator is None and cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)

    b, l_max = ids.shape
    l_min = int(lengths.min())
    total = l_max + cfg.max_new_tokens
    seq = torch.full((b, total), cfg.pad_id, dtype=torch.long, device=device)  # prompt, then generated tokens
    seq[:, :l_max] = ids
    out = torch.full((b, cfg.max_new_tokens), cfg.pad_id, dtype=torch.long, device=device)
    out_logits = None
    n_new = torch.zeros(b, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    stops = torch.tensor(cfg.stop_tokens, dtype=torch.long, device=device)
    rows = torch.arange(b, device=device)

    if cfg.use_cache:
        cache = model.allocate_cache(b, total)
        logits = model(seq[:, :l_min], cache=cache)[:, -1]  # (B, V): predicts position l_min
    else:
        logits = model(seq[:, :l_min])[:, -1]
    for t in range(l_min, total):
        # logits (B, V) predict position t of every sequence
        sampled = sample_next_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)
        in_prompt = t < lengths
        active = ~in_prompt & ~done  # sequences that generate position t
        if cfg.output_logits:
            if out_logits is None:
                out_logits = torch.full((b, cfg.max_new_tokens, logits.shape[-1]), float("nan"), device=device)
            out_logits[rows[active], n_new[active]] = logits[active].float()
        out[rows[active], n_new[active]] = sampled[active]
        n_new += active.long()
        done |= active & (torch.isin(sampled, stops) | (n_new >= cfg.max_new_tokens))
        seq[:, t] = torch.where(in_prompt, seq[:, t], sampled)
        if bool(done.all()):
            break
        if cfg.use_cache:
            logits, cache = model.step(seq[:, t], cache)
        else:
            logits = model(seq[:, : t + 1])[:, -1]
    return GenerationOutput(tokens=out, lengths=n_new, logits=out_logits)
