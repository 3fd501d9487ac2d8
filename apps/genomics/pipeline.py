"""Inference on users' FASTA files: embeddings, per-base log-likelihoods, class probabilities.

:class:`GenomicsPipeline` loads a checkpoint (a ``save_pretrained`` folder or a Lightning ``.ckpt`` of
this app) and runs batched windows on the GPU when there is one (tqdm progress). Sequences longer
than the window (default: the model's context) are cut into windows overlapping by ``overlap`` bases
and stitched back: every base takes its output from exactly one window, the one in which it has the
most left context (a window's outputs before the previous window's end are dropped), so a causal
model sees at least ``overlap`` bases of context for every base past the first window.

* :meth:`~GenomicsPipeline.embed`: per-sequence mean of the per-base features ``(N, D)`` -> ``.npz``;
* :meth:`~GenomicsPipeline.score`: per-base ``log p(x_i | x_<i)`` (nats; the first base of a sequence
  has no prediction: NA) -> per-base ``.tsv``, ``.bedGraph`` and a per-sequence summary with bits
  per base and perplexity (LM checkpoints);
* :meth:`~GenomicsPipeline.classify`: class probabilities (averaged over windows, weighted by window
  length, for long sequences) -> ``.tsv`` (classifier checkpoints).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from longseq.apps.genomics.alphabet import SequenceError, SequenceWarning
from longseq.apps.genomics.checkpoint import load_pretrained
from longseq.apps.genomics.fasta import SequenceRecord, read_sequences
from longseq.apps.genomics.models import model_context
from longseq.apps.genomics.tokenizer import DNATokenizer
from longseq.core.models import LanguageModel

__all__ = [
    "GenomicsPipeline",
    "ScoreResult",
    "plan_windows",
    "write_bedgraph",
    "write_class_probabilities",
    "write_embeddings",
    "write_scores",
]

OnShort = Literal["error", "skip"]
_DEFAULT_WINDOW = 1024


def plan_windows(length: int, window: int, overlap: int) -> list[tuple[int, int, int]]:
    """Windows ``(start, end, keep_from)`` covering ``range(length)``: consecutive starts ``window -
    overlap`` apart, the last one moved back to end at ``length``; window ``k`` supplies the outputs of
    positions ``[keep_from, end)`` (``keep_from`` = the previous window's end, 0 for the first), so every
    position is supplied exactly once."""
    if length < 1 or window < 1:
        raise ValueError(f"length and window must be >= 1, got {length} and {window}")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, window={window}), got {overlap}")
    if length <= window:
        return [(0, length, 0)]
    stride = window - overlap
    starts = [0]
    while starts[-1] + window < length:
        starts.append(min(starts[-1] + stride, length - window))
    plan, prev_end = [], 0
    for start in starts:
        plan.append((start, start + window, prev_end))
        prev_end = start + window
    return plan


@dataclass
class ScoreResult:
    """Per-base scores of one sequence.

    Attributes:
        id: record id.
        seq: the bases (uppercase).
        log_likelihood: ``(L,)`` float64 ``log p(x_i | x_<i)`` in nats; NaN where there is no
            prediction (the first base).
    """

    id: str
    seq: str
    log_likelihood: np.ndarray

    @property
    def scored(self) -> int:
        """Bases with a prediction."""
        return int(np.isfinite(self.log_likelihood).sum())

    @property
    def mean_nll(self) -> float:
        """Mean negative log-likelihood (nats per base) over the scored bases."""
        return float(-np.nanmean(self.log_likelihood)) if self.scored else float("nan")

    @property
    def bits_per_base(self) -> float:
        """Mean negative log2-likelihood over the scored bases."""
        return self.mean_nll / math.log(2)

    @property
    def perplexity(self) -> float:
        """``exp(mean_nll)``."""
        return math.exp(self.mean_nll)


class GenomicsPipeline:
    """Batched, windowed inference with a trained genomics model.

    Args:
        checkpoint: a ``save_pretrained`` folder or a Lightning ``.ckpt`` of this app.
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        batch_size: windows per forward pass.
        window: window length; default the model's context (Hyena ``max_len``), else the training
            window stored in the checkpoint, else 1024.
        overlap: overlap of consecutive windows (default ``window // 4``).
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 16,
        window: int | None = None,
        overlap: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model, self.info = load_pretrained(checkpoint, map_location="cpu")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        context = model_context(self.model)
        window = window or context or int(self.info.extra.get("window", _DEFAULT_WINDOW))
        if context is not None and window > context:
            raise ValueError(f"window {window} exceeds the model's context {context}")
        overlap = window // 4 if overlap is None else overlap
        if not 0 <= overlap < window:
            raise ValueError(f"overlap must be in [0, window={window}), got {overlap}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.window, self.overlap, self.batch_size, self.progress = window, overlap, batch_size, progress
        self.tokenizer = DNATokenizer()

    @property
    def is_lm(self) -> bool:
        """Whether the checkpoint holds a language model (else a classifier)."""
        return isinstance(self.model, LanguageModel)

    @property
    def backbone(self) -> torch.nn.Module:
        return self.model.backbone if self.is_lm else self.model

    # ---------------------------------------------------------------- inputs

    @staticmethod
    def read(path: str | Path) -> list[SequenceRecord]:
        """Records of a FASTA/FASTQ file (alphabet policy of the app; errors name file, record, position)."""
        return read_sequences(path, soft_mask="upper").records

    def _usable(self, records: Sequence[SequenceRecord], min_length: int, on_short: OnShort, what: str):
        if on_short not in ("error", "skip"):
            raise ValueError(f"on_short must be 'error' or 'skip', got {on_short!r}")
        if len(records) == 0:
            raise SequenceError(f"{what}: no sequences given")
        short = [r for r in records if len(r.seq) < min_length]
        if short:
            listed = ", ".join(f"{r.id!r} ({len(r.seq)} bp)" for r in short[:5])
            message = f"{len(short)} of {len(records)} sequence(s) shorter than {min_length} bases: {listed}"
            if on_short == "error" or len(short) == len(records):
                hint = "; pass on_short='skip' to leave them out" if len(short) < len(records) else ""
                raise SequenceError(f"{what}: {message}{hint}")
            warnings.warn(f"{what}: skipped {message}", SequenceWarning, stacklevel=3)
        return [r for r in records if len(r.seq) >= min_length]

    # ---------------------------------------------------------------- windows

    @torch.no_grad()
    def _map_windows(
        self,
        records: Sequence[SequenceRecord],
        fn: Callable[[torch.Tensor], torch.Tensor],
        desc: str,
    ) -> list[list[tuple[int, int, int, torch.Tensor]]]:
        """Run ``fn`` on every window (ids ``(B, l)`` -> outputs ``(B, l, ...)`` or ``(B, ...)``), windows of
        equal length batched together (no padding); returns per record ``(start, end, keep_from, output)``."""
        jobs = []  # (length, record, start, end, keep_from)
        for r, rec in enumerate(records):
            for start, end, keep in plan_windows(len(rec.seq), self.window, self.overlap):
                jobs.append((end - start, r, start, end, keep))
        jobs.sort(key=lambda j: (-j[0], j[1], j[2]))
        out: list[list[tuple[int, int, int, torch.Tensor]]] = [[] for _ in records]
        bar = tqdm(total=len(jobs), desc=desc, unit="window", disable=not self.progress)
        i = 0
        while i < len(jobs):
            length = jobs[i][0]
            group = [j for j in jobs[i : i + self.batch_size] if j[0] == length]
            ids = torch.stack([self.tokenizer.encode(records[r].seq[s:e]) for _, r, s, e, _ in group])  # (B, l)
            result = fn(ids.to(self.device)).float().cpu()
            for row, (_, r, s, e, keep) in enumerate(group):
                out[r].append((s, e, keep, result[row]))
            i += len(group)
            bar.update(len(group))
        bar.close()
        return [sorted(parts, key=lambda p: p[0]) for parts in out]

    @staticmethod
    def _stitch(parts: list[tuple[int, int, int, torch.Tensor]], length: int) -> torch.Tensor:
        """Per-position outputs ``(length, ...)`` from each window's kept positions."""
        first = parts[0][3]
        full = first.new_full((length, *first.shape[1:]), float("nan"))
        for start, end, keep, values in parts:
            full[keep:end] = values[keep - start :]
        return full

    # ---------------------------------------------------------------- tasks

    def per_base_features(self, records: Sequence[SequenceRecord]) -> list[torch.Tensor]:
        """Final backbone features ``(L_i, D)`` of every base of every record (windowed and stitched)."""
        records = self._usable(records, 1, "error", "features")
        parts = self._map_windows(records, lambda ids: self.backbone.forward_features(ids), "features")
        return [self._stitch(p, len(r.seq)) for p, r in zip(parts, records)]

    def embed(self, records: Sequence[SequenceRecord], *, on_short: OnShort = "error") -> tuple[list[str], np.ndarray]:
        """``(ids, embeddings (N, D) float32)``: the mean of each sequence's per-base features."""
        records = self._usable(records, 1, on_short, "embed")
        feats = self.per_base_features(records)
        return [r.id for r in records], torch.stack([f.mean(0) for f in feats]).numpy().astype(np.float32)

    def score(self, records: Sequence[SequenceRecord], *, on_short: OnShort = "error") -> list[ScoreResult]:
        """Per-base log-likelihoods (LM checkpoints); sequences need 2 bases (one prediction)."""
        if not self.is_lm:
            raise ValueError(f"{self.info.source} holds a classifier; score needs a language-model checkpoint")
        if self.overlap < 1 and any(len(r.seq) > self.window for r in records):
            raise ValueError("scoring sequences longer than the window needs overlap >= 1")
        records = self._usable(records, 2, on_short, "score")

        def loglik(ids: torch.Tensor) -> torch.Tensor:  # (B, l) -> (B, l): entry t = log p(ids[t] | ids[<t])
            h = self.model.backbone.forward_features(ids[:, :-1])  # (B, l - 1, D)
            logp = self.model.lm_head(h).float().log_softmax(-1)  # (B, l - 1, V)
            picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (B, l - 1)
            return torch.cat([picked.new_full((ids.shape[0], 1), float("nan")), picked], dim=1)

        parts = self._map_windows(records, loglik, "score")
        results = []
        for p, rec in zip(parts, records):
            ll = self._stitch(p, len(rec.seq)).double().numpy()
            results.append(ScoreResult(rec.id, rec.seq.upper(), ll))
        return results

    def classify(
        self, records: Sequence[SequenceRecord], *, on_short: OnShort = "error", rc_average: bool = False
    ) -> tuple[list[str], np.ndarray]:
        """``(ids, probabilities (N, C))`` (classifier checkpoints); long sequences average their windows'
        probabilities weighted by the bases each window supplies. ``rc_average``: each window's
        probabilities are the mean of its own and its reverse complement's (both strands)."""
        if self.is_lm:
            raise ValueError(f"{self.info.source} holds a language model; classify needs a classifier checkpoint")
        records = self._usable(records, 1, on_short, "classify")

        def probs_of(ids: torch.Tensor) -> torch.Tensor:
            p = self.model(ids).float().softmax(-1)  # (B, C)
            if rc_average:
                p = 0.5 * (p + self.model(self.tokenizer.reverse_complement_ids(ids)).float().softmax(-1))
            return p

        parts = self._map_windows(records, probs_of, "classify")
        probs = []
        for p in parts:
            weights = torch.tensor([float(end - keep) for _, end, keep, _ in p])
            stacked = torch.stack([values for *_, values in p])  # (W, C)
            probs.append((stacked * weights[:, None]).sum(0) / weights.sum())
        return [r.id for r in records], torch.stack(probs).numpy()

    @property
    def class_names(self) -> list[str]:
        """Class names of a classifier checkpoint."""
        return list(self.info.class_names)


# -------------------------------------------------------------------- writers


def write_embeddings(path: str | Path, ids: Sequence[str], embeddings: np.ndarray) -> Path:
    """``.npz`` with ``ids`` (N,) and ``embeddings`` (N, D)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, ids=np.asarray(ids, dtype=str), embeddings=embeddings)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def write_bedgraph(path: str | Path, results: Sequence[ScoreResult], *, name: str = "log_likelihood") -> Path:
    """bedGraph of the per-base log-likelihoods (0-based half-open intervals; unscored bases left out)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.write(f'track type=bedGraph name="{name}" description="log p(base | preceding bases), nats"\n')
        for res in results:
            for pos in np.flatnonzero(np.isfinite(res.log_likelihood)):
                out.write(f"{res.id}\t{pos}\t{pos + 1}\t{res.log_likelihood[pos]:.6f}\n")
    return path


def write_scores(prefix: str | Path, results: Sequence[ScoreResult]) -> dict[str, Path]:
    """``PREFIX.per_base.tsv`` (seq_id, position 1-based, base, log_likelihood nats or NA),
    ``PREFIX.bedGraph`` and ``PREFIX.summary.tsv`` (seq_id, length, scored, mean_nll, bits_per_base,
    perplexity); returns the paths by kind."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_base": prefix.with_name(prefix.name + ".per_base.tsv"),
        "bedgraph": prefix.with_name(prefix.name + ".bedGraph"),
        "summary": prefix.with_name(prefix.name + ".summary.tsv"),
    }
    with open(paths["per_base"], "w") as out:
        out.write("seq_id\tposition\tbase\tlog_likelihood\n")
        for res in results:
            for pos, (base, value) in enumerate(zip(res.seq, res.log_likelihood)):
                out.write(f"{res.id}\t{pos + 1}\t{base}\t{'NA' if not np.isfinite(value) else f'{value:.6f}'}\n")
    write_bedgraph(paths["bedgraph"], results)
    with open(paths["summary"], "w") as out:
        out.write("seq_id\tlength\tscored\tmean_nll\tbits_per_base\tperplexity\n")
        for res in results:
            out.write(
                f"{res.id}\t{len(res.seq)}\t{res.scored}\t{res.mean_nll:.6f}\t{res.bits_per_base:.6f}\t{res.perplexity:.6f}\n"
            )
    return paths


def write_class_probabilities(
    path: str | Path, ids: Sequence[str], probs: np.ndarray, class_names: Sequence[str]
) -> Path:
    """TSV: seq_id, predicted class, one ``prob_<class>`` column per class."""
    if probs.shape != (len(ids), len(class_names)):
        raise ValueError(f"probs must be ({len(ids)}, {len(class_names)}), got {probs.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as out:
        out.write("\t".join(["seq_id", "predicted", *(f"prob_{c}" for c in class_names)]) + "\n")
        for seq_id, row in zip(ids, probs):
            cells = [seq_id, class_names[int(row.argmax())], *(f"{p:.6f}" for p in row)]
            out.write("\t".join(cells) + "\n")
    return path
