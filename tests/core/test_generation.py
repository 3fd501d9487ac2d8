"""generate(): cache == no cache (logits, step by step), batches of different prompt lengths == each
prompt alone, sampling filters, seeds, stop tokens."""

from __future__ import annotations

import pytest
import torch
from toy_mixer import toy_mixer_registered

from longseq.core.backbone import BackboneConfig
from longseq.core.generation import (
    DecoderProtocol,
    GenerationConfig,
    generate,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)
from longseq.core.models import LanguageModel
from longseq.core.registry import list_mixers
from longseq.kernels.testing import assert_close

VOCAB = 23


@pytest.fixture(autouse=True, scope="module")
def _toy():
    with toy_mixer_registered():
        yield


def _attention_registered() -> bool:
    try:
        return "attention" in list_mixers()
    except Exception:  # the attention package is mid-edit
        return False


MIXERS = [
    "toy_cummean",
    pytest.param(
        "attention", marks=pytest.mark.skipif(not _attention_registered(), reason="'attention' not registered yet")
    ),
]


def _lm(mixer: str, norm: str = "layernorm") -> LanguageModel:
    kwargs = {"attention": {"num_heads": 2, "causal": True}} if mixer == "attention" else {}
    cfg = BackboneConfig(vocab_size=VOCAB, dim=16, depth=2, mixer_pattern=mixer, mixer_kwargs=kwargs, norm=norm)
    return LanguageModel(cfg).eval()


class CountingDecoder(torch.nn.Module):
    """A stub decoder whose next token is always ``(last token + 1) % V``: generation logic in isolation."""

    def __init__(self, vocab: int = 10) -> None:
        super().__init__()
        self.vocab = vocab
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.prefills = 0

    def _logits(self, ids):
        return torch.nn.functional.one_hot((ids + 1) % self.vocab, self.vocab).float() * 10

    def forward(self, ids, *, cache=None):
        if cache is not None:
            self.prefills += 1
        return self._logits(ids)

    def allocate_cache(self, batch_size, max_len, dtype=None, device=None):
        return {"steps": 0}

    def step(self, ids_t, cache):
        cache["steps"] += 1
        return self._logits(ids_t), cache


# ------------------------------------------------------------------ cache correctness


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("prefill", [1, 4, 9])
def test_logits_with_cache_equal_logits_without_step_by_step(mixer, prefill):
    model = _lm(mixer, norm="rmsnorm" if prefill == 4 else "layernorm")
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        full = model(ids)  # (B, L, V)
        cache = model.allocate_cache(2, 9)
        got = [model(ids[:, :prefill], cache=cache)]
        for t in range(prefill, 9):
            logits, cache = model.step(ids[:, t], cache)
            got.append(logits[:, None])
    assert_close(torch.cat(got, 1), full, name=f"{mixer} cached logits")


@pytest.mark.parametrize("mixer", MIXERS)
def test_generate_cached_equals_uncached(mixer):
    model = _lm(mixer)
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (3, 6, 1)]
    kw = {"max_new_tokens": 6, "temperature": 0.0, "output_logits": True}
    cached = generate(model, prompts, **kw)
    uncached = generate(model, prompts, use_cache=False, **kw)
    assert torch.equal(cached.tokens, uncached.tokens) and torch.equal(cached.lengths, uncached.lengths)
    assert_close(cached.logits, uncached.logits, name="generated-position logits")
    assert not torch.isnan(cached.logits).any()


@pytest.mark.parametrize("mixer", MIXERS)
def test_batch_of_different_prompt_lengths_equals_each_prompt_alone(mixer):
    model = _lm(mixer)
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (5, 1, 8, 3)]
    batch = generate(model, prompts, max_new_tokens=5, temperature=0.0, output_logits=True)
    for i, p in enumerate(prompts):
        alone = generate(model, p[None], max_new_tokens=5, temperature=0.0, output_logits=True)
        assert torch.equal(batch.tokens[i], alone.tokens[0]), f"prompt {i}"
        assert_close(batch.logits[i], alone.logits[0], name=f"prompt {i} logits")


def test_prompts_are_teacher_forced_then_continued():
    model = CountingDecoder()
    out = generate(model, [[1, 5], [2], [7, 3, 9]], max_new_tokens=3, temperature=0)  # prompts break the count
    assert out.tokens.tolist() == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert out.lengths.tolist() == [3, 3, 3] and model.prefills == 1
    assert [s.tolist() for s in out.sequences()] == out.tokens.tolist()
    assert isinstance(model, DecoderProtocol)


def test_stop_tokens_end_sequences_and_pad():
    out = generate(
        CountingDecoder(), [[1, 2], [4], [6, 7, 8]], max_new_tokens=6, temperature=0, stop_tokens=[6], pad_id=-1
    )
    assert out.tokens.tolist() == [[3, 4, 5, 6, -1, -1], [5, 6, -1, -1, -1, -1], [9, 0, 1, 2, 3, 4]]
    assert out.lengths.tolist() == [4, 2, 6]
    early = generate(CountingDecoder(), [[1], [2]], max_new_tokens=10, temperature=0, stop_tokens=(3,))
    assert early.lengths.tolist() == [2, 1]


# ------------------------------------------------------------------ sampling


def test_top_k_filter():
    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    out = top_k_filter(logits, 2)
    inf = float("-inf")
    assert out.tolist() == [[inf, 5.0, inf, 5.0, inf], [inf, inf, inf, 3.0, 4.0]]
    assert top_k_filter(logits, 3)[0].tolist() == [inf, 5.0, 3.0, 5.0, inf]
    assert torch.equal(top_k_filter(logits, None), logits) and torch.equal(top_k_filter(logits, 5), logits)


@pytest.mark.parametrize(("p", "kept"), [(0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3), (0.96, 4), (1.0, 4), (1e-6, 1)])
def test_top_p_filter(p, kept):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # ranked: 1, 3, 0, 2
    out = top_p_filter(probs.log()[None], p)[0]
    keep = torch.isfinite(out)
    assert int(keep.sum()) == kept
    assert keep.tolist() == [r < kept for r in [2, 0, 3, 1]]


def test_sampling_respects_filters_and_temperature():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0]]).expand(4000, 5)
    gen = torch.Generator().manual_seed(0)
    drawn = sample_next_token(logits, 1.0, top_k=2, generator=gen)
    assert set(drawn.tolist()) == {0, 1}
    share = (drawn == 0).float().mean().item()
    assert abs(share - 1 / (1 + torch.e**-1)) < 0.03  # softmax over the two kept logits
    hot = sample_next_token(logits, 100.0, generator=gen)
    assert len(set(hot.tolist())) == 5
    assert sample_next_token(logits, 1.0, top_p=0.3, generator=gen).unique().tolist() == [0]
    assert torch.equal(sample_next_token(logits, 0.0), torch.zeros(4000, dtype=torch.long))


def test_seeds_make_sampling_reproducible():
    model = _lm("toy_cummean")
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (4, 2)]
    kw = {"max_new_tokens": 12, "temperature": 1.5, "top_k": 10, "top_p": 0.95}
    a = generate(model, prompts, seed=7, **kw)
    b = generate(model, prompts, GenerationConfig(seed=7, **kw))
    c = generate(model, prompts, seed=8, **kw)
    d = generate(model, prompts, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.tokens, d.tokens)
    assert not torch.equal(a.tokens, c.tokens)


def test_generation_config_and_input_errors():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        GenerationConfig(top_k=-2)
    model = CountingDecoder()
    with pytest.raises(TypeError, match="unknown generation options \\['max_tokens'\\]"):
        generate(model, [[1]], max_tokens=3)
    with pytest.raises(ValueError, match="every prompt non-empty"):
        generate(model, [[1], []])
    with pytest.raises(ValueError, match="integer ids \\(B, L\\)"):
        generate(model, torch.zeros(2, 3))
    out = generate(model, torch.tensor([[1, 2]]), max_new_tokens=2, temperature=0)
    assert out.tokens.tolist() == [[3, 4]] and out.logits is None


@pytest.mark.gpu
def test_generation_on_gpu_cached_equals_uncached_and_alone():
    model = _lm("attention", norm="rmsnorm").cuda()
    prompts = [torch.randint(0, VOCAB, (n,)) for n in (7, 2, 12)]
    kw = {"max_new_tokens": 8, "temperature": 0.0, "output_logits": True}
    cached = generate(model, prompts, **kw)
    uncached = generate(model, prompts, use_cache=False, **kw)
    assert cached.tokens.device.type == "cuda"
    assert torch.equal(cached.tokens, uncached.tokens)
    assert_close(cached.logits, uncached.logits, name="cuda logits")
    for i, p in enumerate(prompts):
        assert torch.equal(generate(model, p[None], **kw).tokens[0], cached.tokens[i])
    sampled = [generate(model, prompts, seed=3, max_new_tokens=8, top_k=5).tokens for _ in range(2)]
    assert torch.equal(*sampled)
