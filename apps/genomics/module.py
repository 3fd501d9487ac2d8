"""LightningModules of the genomics app and their optimiser schedule (callbacks: ``callbacks.py``).

* :class:`CausalLMModule`: next-base prediction with the core chunked cross-entropy
  (:meth:`~longseq.core.heads.LMHead.loss`); logs loss (nats/base), bits per base and perplexity,
  validation/test aggregated over tokens.
* :class:`ClassificationModule`: a backbone with a pooled classification head; optional pretrained LM
  backbone (``pretrained=PATH``: fine-tuning by one argument), frozen backbone (optionally unfrozen at
  an epoch), class-weighted loss; accuracy, MCC and AUROC (torchmetrics).

Both modules take the model as a registry name plus keyword overrides (``backbone="hyena_dna_tiny"``,
``backbone_kwargs={"depth": 4}``), so their hyper-parameters are plain data and their Lightning
checkpoints load with ``torch.load(weights_only=True)``; checkpoints also carry the model config under
``"longseq"`` (see :mod:`longseq.apps.genomics.checkpoint`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import AUROC, Accuracy, MatthewsCorrCoef

from longseq.apps.genomics.checkpoint import PretrainedInfo, load_pretrained, model_meta, save_pretrained
from longseq.apps.genomics.collate import reverse_complement_batch
from longseq.apps.genomics.datamodule import set_dataset_epoch
from longseq.apps.genomics.models import dna_classifier, model_context
from longseq.core.backbone import SequenceBackbone
from longseq.core.mixers.hyena import HyenaOperator
from longseq.core.models import LanguageModel
from longseq.core.packing import PackedBatch
from longseq.core.registry import create_model

__all__ = [
    "CausalLMModule",
    "ClassificationModule",
    "GenomicsModule",
    "lr_lambda",
]

Schedule = Literal["cosine", "linear", "constant"]
IGNORE = -100


def lr_lambda(step: int, *, warmup_steps: int, total_steps: int, schedule: Schedule, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up over ``warmup_steps`` to 1, then
    ``"cosine"`` or ``"linear"`` decay to ``min_lr_ratio`` at ``total_steps``, or ``"constant"``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


class GenomicsModule(L.LightningModule):
    """Shared parts: AdamW with decoupled weight decay (none on biases, norms, Hyena filters and
    parameters marked ``_no_weight_decay``), warm-up + cosine/linear/constant schedule per step,
    ``save_pretrained``/``from_pretrained``, and per-epoch dataset draws.

    Args:
        lr: peak learning rate.
        weight_decay: AdamW weight decay of the decayed group.
        betas: AdamW betas.
        warmup_steps: linear warm-up steps.
        schedule: ``"cosine"``, ``"linear"`` or ``"constant"`` after warm-up.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
    """

    model: nn.Module

    def __init__(
        self,
        lr: float = 6e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        schedule: Schedule = "cosine",
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        if lr <= 0 or weight_decay < 0 or warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
            raise ValueError(
                f"need lr > 0, weight_decay >= 0, warmup_steps >= 0, 0 <= min_lr_ratio <= 1; got "
                f"{lr}, {weight_decay}, {warmup_steps}, {min_lr_ratio}"
            )
        if schedule not in ("cosine", "linear", "constant"):
            raise ValueError(f"schedule must be 'cosine', 'linear' or 'constant', got {schedule!r}")
        self.optim_config = {
            "lr": lr,
            "weight_decay": weight_decay,
            "betas": tuple(betas),
            "warmup_steps": warmup_steps,
            "schedule": schedule,
            "min_lr_ratio": min_lr_ratio,
        }

    # ---------------------------------------------------------------- optimisation

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: decayed weights and the rest (see the class docstring)."""
        no_decay: set[int] = set()
        for module in self.model.modules():
            if isinstance(module, HyenaOperator):
                no_decay.update(id(p) for p in module.filter.parameters())
            if isinstance(module, SequenceBackbone):
                no_decay.update(id(p) for n, p in module.named_parameters() if n in module.no_weight_decay())
        decay, rest = [], []
        for p in self.model.parameters():
            skip = p.dim() < 2 or getattr(p, "_no_weight_decay", False) or id(p) in no_decay
            (rest if skip else decay).append(p)
        return [
            {"params": decay, "weight_decay": self.optim_config["weight_decay"]},
            {"params": rest, "weight_decay": 0.0},
        ]

    def configure_optimizers(self) -> dict[str, Any]:
        cfg = self.optim_config
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=cfg["lr"], betas=cfg["betas"])
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 0
        total = total if 0 < total < 2**62 else 0  # unbounded (max_steps=-1, max_epochs=-1) -> no decay

        def fn(step: int) -> float:
            return lr_lambda(
                step,
                warmup_steps=cfg["warmup_steps"],
                total_steps=total,
                schedule=cfg["schedule"] if total else "constant",
                min_lr_ratio=cfg["min_lr_ratio"],
            )

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------- hooks

    def on_train_epoch_start(self) -> None:
        """Tell the training datasets which epoch it is (random windows, augmentation draws)."""
        loader = self.trainer.train_dataloader
        loaders = loader if isinstance(loader, (list, tuple)) else [loader]
        for dl in loaders:
            if dl is not None and hasattr(dl, "dataset"):
                set_dataset_epoch(dl.dataset, self.current_epoch)

    def pretrained_meta(self) -> dict[str, Any]:
        """Keyword arguments of :func:`~longseq.apps.genomics.checkpoint.model_meta` for this module."""
        return {"name": self.hparams.get("backbone", "")}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["longseq"] = model_meta(self.model, **self.pretrained_meta())

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the model as ``config.json`` + ``weights.pt`` (:func:`~longseq.apps.genomics.checkpoint.save_pretrained`)."""
        return save_pretrained(self.model, directory, **self.pretrained_meta())

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> GenomicsModule:
        """A module whose model starts from the checkpoint at ``path`` (folder or ``.ckpt``); ``kwargs``
        go to the constructor."""
        return cls(pretrained=str(path), **kwargs)


def _load(path: str) -> tuple[nn.Module, PretrainedInfo]:
    return load_pretrained(path)


class CausalLMModule(GenomicsModule):
    """Causal DNA language model training (next base prediction).

    Batches are ``{"input_ids": (B, L + 1), "attention_mask": (B, L + 1)}`` (``GenomeLMDataModule``):
    inputs are the first ``L`` tokens, targets the last ``L``; padded positions add no loss.

    Args:
        backbone: a registered model name (``hyena_dna_tiny``, ``mamba2_dna``, ...; a ``LanguageModel``).
        backbone_kwargs: overrides for it (``depth``, ``dim``, ``max_len``, ...).
        pretrained: start from this checkpoint (save_pretrained folder or ``.ckpt``) instead.
        lr, weight_decay, betas, warmup_steps, schedule, min_lr_ratio: see :class:`GenomicsModule`.
    """

    def __init__(
        self,
        backbone: str = "hyena_dna_tiny",
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained: str | None = None,
        lr: float = 6e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        schedule: Schedule = "cosine",
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, schedule, min_lr_ratio)
        self.save_hyperparameters()
        if pretrained is not None:
            model, info = _load(pretrained)
            if info.kind != "lm":
                raise ValueError(f"{pretrained} holds a {info.kind} model; CausalLMModule needs a language model")
        else:
            model = create_model(backbone, **(backbone_kwargs or {}))
        if not isinstance(model, LanguageModel):
            raise TypeError(f"model {backbone!r} is a {type(model).__name__}; CausalLMModule needs a LanguageModel")
        self.model = model.train()
        self.val_nll, self.test_nll = MeanMetric(), MeanMetric()

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        window, limit = getattr(dm, "target_window", None), model_context(self.model)
        if window is not None and limit is not None and window > limit:
            raise ValueError(
                f"data window {window} exceeds the model's context {limit}; "
                "raise --model.backbone_kwargs.max_len or lower --data.window"
            )

    def token_nll(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token negative log-likelihood in nats ``(B, L)`` (0 at padding) and the target mask ``(B, L)``."""
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
        if ids.dim() != 2 or ids.shape[1] < 2:
            raise ValueError(f"LM batches need input_ids (B, L + 1) with L >= 1, got {tuple(ids.shape)}")
        inputs, targets = ids[:, :-1], ids[:, 1:].masked_fill(~mask[:, 1:], IGNORE)  # (B, L) each
        h = self.model.backbone.forward_features(inputs)  # (B, L, D)
        nll = self.model.lm_head.loss(h, targets, ignore_index=IGNORE, reduction="none")  # (B, L) fp32
        return nll, targets != IGNORE

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        nll, valid = self.token_nll(batch)
        loss = nll.sum() / valid.sum().clamp_min(1)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/bpb", loss / math.log(2))
        self.log("train/window", float(batch["input_ids"].shape[1] - 1))
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], metric: MeanMetric, prefix: str) -> None:
        nll, valid = self.token_nll(batch)
        metric.update(nll[valid], torch.ones_like(nll[valid]))  # token-weighted over the whole split

    def _eval_end(self, metric: MeanMetric, prefix: str) -> None:
        loss = metric.compute()
        self.log(f"{prefix}/loss", loss, prog_bar=True, sync_dist=False)
        self.log(f"{prefix}/bpb", loss / math.log(2), prog_bar=prefix == "val")
        self.log(f"{prefix}/ppl", torch.exp(loss))
        metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.val_nll, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end(self.val_nll, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, self.test_nll, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_end(self.test_nll, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Per-token log-likelihoods ``(B, L)`` (nats; 0 at padding) of the targets."""
        nll, valid = self.token_nll(batch)
        return {"log_likelihood": -nll, "mask": valid}


class ClassificationModule(GenomicsModule):
    """Sequence classification: a DNA backbone, a pooled classification head, cross-entropy.

    Batches are :class:`~longseq.core.packing.PackedBatch` with per-sequence ``labels``
    (``SequenceClassificationDataModule``), or padded dicts with ``input_ids``, ``attention_mask``
    and ``labels`` (exact for causal backbones).

    Args:
        backbone: registered model name used when ``pretrained`` is None.
        backbone_kwargs: its overrides.
        num_classes: number of classes (checked against the data module's).
        pool: ``"mean"``, ``"last"``, ``"cls"`` or ``"attention"``.
        head_drop: dropout before the classifier.
        pretrained: checkpoint (save_pretrained folder or ``.ckpt``) of a language model whose backbone
            starts the classifier (or of a classifier to continue from).
        freeze_backbone: train only the head.
        unfreeze_at_epoch: with ``freeze_backbone``, train everything from this epoch on.
        class_weights: cross-entropy class weights: a list, ``"balanced"`` (``N / (C * n_c)`` from the
            training data) or None.
        rc_average: at validation, test and prediction, average the class probabilities of each
            sequence and of its reverse complement (both strands of the same DNA; training is unchanged,
            use the data module's ``rc_prob`` to augment it).
        lr, weight_decay, betas, warmup_steps, schedule, min_lr_ratio: see :class:`GenomicsModule`.
    """

    def __init__(
        self,
        backbone: str = "hyena_dna_tiny",
        backbone_kwargs: dict[str, Any] | None = None,
        num_classes: int = 2,
        pool: Literal["mean", "last", "cls", "attention"] = "mean",
        head_drop: float = 0.0,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        unfreeze_at_epoch: int | None = None,
        class_weights: list[float] | Literal["balanced"] | None = None,
        rc_average: bool = False,
        lr: float = 1e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        schedule: Schedule = "cosine",
        min_lr_ratio: float = 0.1,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, schedule, min_lr_ratio)
        self.save_hyperparameters()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if isinstance(class_weights, str) and class_weights != "balanced":
            raise ValueError(f"class_weights must be a list, 'balanced' or None, got {class_weights!r}")
        if isinstance(class_weights, (list, tuple)) and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {num_classes} classes")
        if unfreeze_at_epoch is not None and not freeze_backbone:
            raise ValueError("unfreeze_at_epoch needs freeze_backbone=True")
        self.class_names = [str(i) for i in range(num_classes)]
        if pretrained is not None:
            source, info = _load(pretrained)
            if info.kind == "classifier":
                self.class_names = info.class_names
                if source.cfg.num_classes != num_classes or source.cfg.pool != pool:
                    source.reset_classifier(num_classes, pool)
                    self.class_names = [str(i) for i in range(num_classes)]
            self.model = dna_classifier(source, num_classes, pool=pool, head_drop=head_drop)
        else:
            self.model = dna_classifier(
                backbone, num_classes, pool=pool, head_drop=head_drop, **(backbone_kwargs or {})
            )
        self.model.train()
        weights = torch.ones(num_classes)
        if isinstance(class_weights, (list, tuple)):
            weights = torch.tensor([float(w) for w in class_weights])
            if (weights <= 0).any():
                raise ValueError(f"class_weights must be > 0, got {class_weights}")
        self.register_buffer("class_weight", weights, persistent=False)
        if freeze_backbone:
            self.set_backbone_trainable(False)
        task = "binary" if num_classes == 2 else "multiclass"
        kw = {"task": task} if task == "binary" else {"task": task, "num_classes": num_classes}
        metrics = MetricCollection({"acc": Accuracy(**kw), "mcc": MatthewsCorrCoef(**kw), "auroc": AUROC(**kw)})
        self.val_metrics, self.test_metrics = metrics.clone(prefix="val/"), metrics.clone(prefix="test/")

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze (True) every parameter but the classification head's."""
        head = {id(p) for p in self.model.head.parameters()}
        for p in self.model.parameters():
            if id(p) not in head:
                p.requires_grad_(trainable)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None or not hasattr(dm, "num_classes"):
            return
        if dm.num_classes != self.hparams.num_classes:
            raise ValueError(
                f"the data has {dm.num_classes} classes {dm.class_names}, the model {self.hparams.num_classes}; "
                f"set --model.init_args.num_classes {dm.num_classes}"
            )
        self.class_names = dm.class_names
        if self.hparams.class_weights == "balanced" and stage == "fit":
            counts = torch.as_tensor(dm.class_counts(), dtype=torch.float32)
            if (counts == 0).any():
                raise ValueError(
                    f"class_weights='balanced' needs every class in the training data, counts {counts.tolist()}"
                )
            self.class_weight = (counts.sum() / (len(counts) * counts)).to(self.class_weight.device)

    def pretrained_meta(self) -> dict[str, Any]:
        return {"name": self.hparams.backbone, "class_names": list(self.class_names)}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        at = self.hparams.unfreeze_at_epoch
        if at is not None and self.current_epoch >= at:
            self.set_backbone_trainable(True)

    def forward(self, batch: PackedBatch | dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(N, num_classes)``."""
        if isinstance(batch, PackedBatch):
            return self.model(batch)
        return self.model(batch["input_ids"], mask=batch.get("attention_mask"))

    def eval_probs(self, batch: PackedBatch | dict[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)`` fp32 for evaluation: with ``rc_average``, the mean
        of the sequence's and its reverse complement's."""
        probs = self(batch).float().softmax(-1)
        if self.hparams.rc_average:
            probs = 0.5 * (probs + self(reverse_complement_batch(batch)).float().softmax(-1))
        return probs

    def _labels(self, batch: PackedBatch | dict[str, torch.Tensor]) -> torch.Tensor:
        labels = batch.labels if isinstance(batch, PackedBatch) else batch.get("labels")
        if labels is None:
            raise ValueError("classification batches need per-sequence labels")
        return labels.long()

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.class_weight)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        logits, labels = self(batch), self._labels(batch)
        loss = self._loss(logits, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        self.log("train/acc", (logits.argmax(-1) == labels).float().mean(), batch_size=labels.shape[0])
        return loss

    def _eval(self, batch: Any, metrics: MetricCollection, prefix: str) -> None:
        probs, labels = self.eval_probs(batch), self._labels(batch)
        loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels, weight=self.class_weight)
        self.log(f"{prefix}/loss", loss, prog_bar=prefix == "val", batch_size=labels.shape[0])
        metrics.update(probs[:, 1] if self.hparams.num_classes == 2 else probs, labels)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True)
        self.val_metrics.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        self.test_metrics.reset()

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(N, num_classes)`` (strand-averaged with ``rc_average``)."""
        return self.eval_probs(batch)
