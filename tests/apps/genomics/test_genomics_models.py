"""Registered genomics models, the classifier wrapper, overfitting and checkpoint round trips."""

from __future__ import annotations

import math

import pytest
import torch

from longseq.apps.genomics import DNATokenizer, dna_classifier, load_pretrained, model_context, save_pretrained
from longseq.core.backbone import SequenceBackbone
from longseq.core.models import LanguageModel
from longseq.core.registry import create_model, list_models

GENOMICS_MODELS = {
    "hyena_dna_tiny": {"dim": 32, "max_len": 64},
    "hyena_dna_small": {"dim": 32, "depth": 2, "max_len": 64},
    "hyena_dna_medium": {"dim": 32, "depth": 2, "max_len": 64},
    "mamba_dna": {"dim": 32, "depth": 2},
    "mamba2_dna": {"dim": 32, "depth": 2, "mixer_kwargs": {"mamba2": {"headdim": 16, "d_state": 16}}},
    "hybrid_dna": {"dim": 32, "depth": 4, "mixer_kwargs": {"mamba2": {"headdim": 16, "d_state": 16}}},
    "transformer_dna": {"dim": 32, "depth": 2},
}


@pytest.fixture(autouse=True)
def _reference_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """App tests run the kernels' PyTorch references on CPU (the kernels are tested against them elsewhere)."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "0")


def test_every_genomics_model_is_registered() -> None:
    assert set(GENOMICS_MODELS) <= set(list_models("*dna*"))


@pytest.mark.parametrize("name", sorted(GENOMICS_MODELS))
def test_model_builds_and_runs(name: str) -> None:
    model = create_model(name, **GENOMICS_MODELS[name])
    assert isinstance(model, LanguageModel)
    assert model.cfg.vocab_size == DNATokenizer.vocab_size
    ids = torch.randint(5, 10, (2, 33))
    logits = model(ids)
    assert logits.shape == (2, 33, DNATokenizer.vocab_size)
    loss = model(ids, labels=ids)
    assert torch.isfinite(loss) and abs(loss.item() - math.log(10)) < 1.0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_published_hyena_sizes_and_context() -> None:
    tiny = create_model("hyena_dna_tiny")
    assert (tiny.cfg.dim, tiny.cfg.depth, model_context(tiny)) == (128, 2, 1024)
    small = create_model("hyena_dna_small")
    assert (small.cfg.dim, small.cfg.depth, model_context(small)) == (256, 4, 32768)
    assert model_context(create_model("hyena_dna_tiny", max_len=4096, depth=4)) == 4096
    assert model_context(create_model("mamba_dna", dim=32, depth=1)) is None
    with pytest.raises(ValueError, match="max_len must be >= 1"):
        create_model("hyena_dna_tiny", max_len=0)


def test_hybrid_pattern_and_transformer_backend() -> None:
    hybrid = create_model("hybrid_dna", **GENOMICS_MODELS["hybrid_dna"])
    assert hybrid.cfg.mixer_names() == ["mamba2", "mamba2", "mamba2", "attention"]
    transformer = create_model("transformer_dna", dim=32, depth=1)
    assert transformer.backbone.blocks[0].mixer.config.backend == "auto"
    assert transformer.backbone.blocks[0].mixer.config.causal


def test_classifier_from_lm_keeps_backbone_weights() -> None:
    lm = create_model("hyena_dna_tiny", dim=32, max_len=64)
    embed = lm.backbone.embed.weight.detach().clone()
    clf = dna_classifier(lm, 3, pool="mean")
    assert isinstance(clf, SequenceBackbone) and torch.equal(clf.embed.weight, embed)
    assert clf(torch.randint(5, 10, (4, 20))).shape == (4, 3)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        dna_classifier("hyena_dna_tiny", 1)


def test_tiny_model_overfits_a_few_sequences() -> None:
    torch.manual_seed(0)
    model = create_model("hyena_dna_tiny", dim=64, max_len=64)
    ids = torch.randint(6, 10, (4, 32))  # 4 random 32-base sequences: log 4 nats/base unless memorised
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(80):
        loss = model(ids, labels=ids)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 1.2  # about log 4 = 1.386 at the start
    assert loss.item() < 0.3, f"loss {loss.item():.3f} did not drop well below log 4"


@pytest.mark.parametrize("kind", ["lm", "classifier"])
def test_save_and_load_pretrained_round_trip(tmp_path, kind: str) -> None:
    model = create_model("hyena_dna_tiny", dim=32, max_len=64)
    if kind == "classifier":
        model = dna_classifier(model, 2, pool="last")
    model.eval()
    path = save_pretrained(
        model, tmp_path / "m", name="hyena_dna_tiny", class_names=None if kind == "lm" else ["x", "y"]
    )
    loaded, info = load_pretrained(path)
    assert info.kind == kind and info.name == "hyena_dna_tiny"
    ids = torch.randint(5, 10, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
    if kind == "classifier":
        assert info.class_names == ["x", "y"]
    else:  # tied weights stay tied
        assert loaded.lm_head.proj.weight is loaded.backbone.embed.weight


def test_load_pretrained_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="missing config.json, weights.pt"):
        load_pretrained(tmp_path / "empty")
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint of a genomics module"):
        load_pretrained(tmp_path / "other.ckpt")
