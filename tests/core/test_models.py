"""Registered generic models: LanguageModel loss (padded and packed == per sequence), weight tying,
overrides, the classifier, hybrids by configuration, and torch.compile on a small model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from toy_mixer import CumMeanMixer, toy_mixer_registered

from longseq.core.backbone import BackboneConfig
from longseq.core.models import LanguageModel
from longseq.core.packing import pack, unpack
from longseq.core.registry import create_model, list_models
from longseq.kernels.testing import assert_close, compile_backend

LENGTHS = [6, 2, 9, 1]


def test_registered_models_are_listed():
    names = list_models()
    for name in ("transformer_lm_tiny", "transformer_lm_small", "sequence_classifier_tiny"):
        assert name in names
    assert list_models("transformer_lm_*") == ["transformer_lm_small", "transformer_lm_tiny"]


def test_lm_logits_and_loss_match_manual_cross_entropy():
    lm = create_model("transformer_lm_tiny", vocab_size=31, norm="layernorm", loss_chunk_size=5)
    ids = torch.randint(0, 31, (2, 7))
    logits = lm(ids)
    assert logits.shape == (2, 7, 31)
    labels = ids.clone()
    labels[1, 4:] = -100  # e.g. padding
    loss = lm(ids, labels=labels)
    ref = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    assert_close(loss, ref, name="LM loss")
    with pytest.raises(ValueError, match="labels must have the input's shape"):
        lm(ids, labels=ids[:, :3])


def test_packed_lm_loss_equals_per_sequence_losses():
    lm = create_model("transformer_lm_tiny", vocab_size=31, norm="layernorm", loss_chunk_size=4)
    seqs = [torch.randint(0, 31, (n,)) for n in LENGTHS]
    batch = pack(seqs, seqs)
    loss = lm(batch, labels=batch.labels)  # mean over all T - N next-token targets
    loss.backward()
    grads = [p.grad.clone() for p in lm.parameters()]
    lm.zero_grad()
    targets = sum(n - 1 for n in LENGTHS)
    total = sum(lm(s[None], labels=s[None]) * (len(s) - 1) for s in seqs) / targets
    total.backward()
    assert_close(loss, total, name="packed loss")
    for i, (g, p) in enumerate(zip(grads, lm.parameters())):
        assert_close(g, p.grad, name=f"grad {i}")
    logits = lm(batch.x, packed=batch)
    for got, s in zip(unpack(logits, batch.cu_seqlens), seqs):
        assert_close(got, lm(s[None])[0], name="packed logits")


def test_weight_tying_and_overrides():
    lm = create_model("transformer_lm_tiny")
    assert lm.lm_head.proj.weight is lm.backbone.embed.weight
    n_tied = sum(p.numel() for p in lm.parameters())
    untied = create_model("transformer_lm_tiny", tie_embeddings=False)
    assert untied.lm_head.proj.weight is not untied.backbone.embed.weight
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 256 * 64
    deeper = create_model("transformer_lm_tiny", depth=4, mixer_kwargs={"attention": {"num_kv_heads": 2}})
    attn_cfg = deeper.backbone.cfg.mixer_kwargs["attention"]
    assert len(deeper.backbone.blocks) == 4 and attn_cfg == {"num_heads": 4, "causal": True, "num_kv_heads": 2}
    with pytest.raises(TypeError, match="unexpected keyword argument 'pretrained'"):
        create_model("transformer_lm_tiny", pretrained=True)
    with pytest.raises(TypeError, match="unknown overrides \\['tie_embeddings'\\]"):
        create_model("sequence_classifier_tiny", tie_embeddings=False)
    with pytest.raises(ValueError, match="needs token input"):
        LanguageModel(BackboneConfig(input_dim=3))
    with pytest.raises(ValueError, match="no prefix tokens"):
        create_model("transformer_lm_tiny", num_prefix_tokens=1)


def test_small_model_builds_on_meta():
    with torch.device("meta"):
        lm = create_model("transformer_lm_small")
    assert len(lm.backbone.blocks) == 8 and lm.cfg.vocab_size == 32000
    assert 30e6 < sum(p.numel() for p in lm.parameters()) < 60e6


def test_sequence_classifier_packed_equals_alone():
    model = create_model("sequence_classifier_tiny", norm="layernorm", num_classes=3, pool="attention").eval()
    seqs = [torch.randint(0, 256, (n,)) for n in LENGTHS]
    logits = model(pack(seqs))
    assert logits.shape == (len(LENGTHS), 3)
    assert_close(logits, torch.cat([model(s[None]) for s in seqs]), name="classifier logits")


def test_hybrid_pattern_is_configuration():
    with toy_mixer_registered():
        lm = create_model("transformer_lm_tiny", mixer_pattern="toy_cummean*2,attention", depth=6, norm="layernorm")
        kinds = [type(b.mixer).__name__ for b in lm.backbone.blocks]
        assert kinds == ["CumMeanMixer", "CumMeanMixer", "Attention"] * 2
        assert isinstance(lm.backbone.blocks[0].mixer, CumMeanMixer)
        ids = torch.randint(0, 256, (2, 5))
        assert lm(ids, labels=ids).isfinite()


@pytest.mark.slow
def test_torch_compile_small_model():
    """The registered tiny LM (real attention) under torch.compile: loss and every gradient equal eager."""
    torch._dynamo.reset()
    lm = create_model("transformer_lm_tiny", vocab_size=64)
    ids = torch.randint(0, 64, (2, 12))
    compiled = torch.compile(lm, backend=compile_backend())
    loss = compiled(ids, labels=ids)
    loss.backward()
    grads = [p.grad.clone() for p in lm.parameters()]
    lm.zero_grad()
    ref = lm(ids, labels=ids)
    ref.backward()
    assert_close(loss, ref, name="compiled loss")
    for i, p in enumerate(lm.parameters()):
        assert_close(grads[i], p.grad, name=f"compiled grad {i}")


@pytest.mark.parametrize("packed", [False, True])
def test_our_layers_trace_without_graph_breaks(packed):
    """Backbone, blocks, norms, MLPs, packing helpers and the chunked loss trace as one graph
    (checked with a compile-friendly toy mixer, so only our code is under test)."""
    torch._dynamo.reset()
    with toy_mixer_registered():
        lm = create_model("transformer_lm_tiny", vocab_size=64, mixer_pattern="toy_cummean")
        assert lm.cfg.mixer_kwargs == {}  # the default attention kwargs went with attention
    seqs = [torch.randint(0, 64, (n,)) for n in LENGTHS]
    batch = pack(seqs, seqs)
    ids = torch.randint(0, 64, (2, 9))
    run = (lambda b: lm(b, labels=b.labels)) if packed else (lambda x: lm(x, labels=x))
    explain = torch._dynamo.explain(run)(batch if packed else ids)
    assert explain.graph_break_count == 0, [b.reason for b in explain.break_reasons]


def test_lightning_fit_on_token_budget_batches(tmp_path):
    """The packing pieces in a real Lightning loop: batch sampler (with set_epoch), collate, device
    transfer of PackedBatch, and the packed LM loss."""
    import lightning as L
    from torch.utils.data import DataLoader

    from longseq.core.packing import PackedCollate, TokenBudgetBatchSampler

    class LitLM(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = create_model("transformer_lm_tiny", vocab_size=32, norm="layernorm", depth=1)
            self.seen: list[int] = []

        def training_step(self, batch, _):
            assert batch.num_tokens <= 48
            self.seen.append(batch.num_seqs)
            return self.model(batch, labels=batch.labels)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    lengths = [3, 17, 8, 25, 4, 11, 30, 2, 9, 14]
    data = [torch.randint(0, 32, (n,)) for n in lengths]
    examples = [{"input_ids": x, "labels": x} for x in data]
    sampler = TokenBudgetBatchSampler(lengths, 48, seed=0)
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=PackedCollate())
    lit = LitLM()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(lit, loader)
    assert sum(lit.seen) == 2 * len(lengths) and sampler.epoch == 1
