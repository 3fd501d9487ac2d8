"""longseq.apps.genomics: DNA language modelling and sequence classification.

Data layer (this package so far):

* :mod:`~longseq.apps.genomics.alphabet`: the alphabet policy (soft-masking, IUPAC codes -> N, errors),
  :func:`reverse_complement` of strings;
* :mod:`~longseq.apps.genomics.fasta`: :func:`read_fasta`, :func:`read_fastq`, :func:`read_sequences`
  (``Bio.SeqIO``, gzip transparently) returning records and a :class:`ReadReport`;
* :mod:`~longseq.apps.genomics.tables`: ``seq,label`` tables and ``id,label`` label tables;
* :mod:`~longseq.apps.genomics.tokenizer`: :class:`DNATokenizer` (pad/bos/eos/mask/cls, N, A, C, G, T);
* :mod:`~longseq.apps.genomics.datasets`: :class:`GenomeWindowDataset` (causal-LM windows, train/val by
  region) and :class:`SequenceClassificationDataset` (FASTA per class, CSV, FASTA + label table);
* :mod:`~longseq.apps.genomics.splits`: :func:`kfold_splits` (stratified k-fold);
* :mod:`~longseq.apps.genomics.collate`: :class:`PadCollate` (packed batches: ``longseq.core.packing.PackedCollate``);
* :mod:`~longseq.apps.genomics.sources`: the shared datasets (E. coli K-12, iEnhancer, human_nontata_promoters).

Models and training:

* :mod:`~longseq.apps.genomics.models`: registered models ``hyena_dna_tiny|small|medium``, ``mamba_dna``,
  ``mamba2_dna``, ``hybrid_dna``, ``transformer_dna`` and :func:`dna_classifier`;
* :mod:`~longseq.apps.genomics.datamodule`: :class:`GenomeLMDataModule`, :class:`SequenceClassificationDataModule`;
* :mod:`~longseq.apps.genomics.module`: :class:`CausalLMModule`, :class:`ClassificationModule`,
  :class:`SequenceLengthWarmup`, :class:`ExportPretrained`;
* :mod:`~longseq.apps.genomics.checkpoint`: :func:`save_pretrained` / :func:`load_pretrained`;
* :mod:`~longseq.apps.genomics.pipeline`: :class:`GenomicsPipeline` (``longseq-genomics embed|score|classify``);
* :mod:`~longseq.apps.genomics.markov`: :class:`MarkovModel`, the order-k baseline;
* :mod:`~longseq.apps.genomics.cli`: ``longseq-genomics`` (LightningCLI + pipelines), configs in ``configs/``.
"""

from longseq.apps.genomics import models as _models  # noqa: F401  (registers the DNA models)
from longseq.apps.genomics.alphabet import SequenceError, SequenceWarning, normalize_sequence, reverse_complement
from longseq.apps.genomics.callbacks import ExportPretrained, SequenceLengthWarmup
from longseq.apps.genomics.checkpoint import PretrainedInfo, load_pretrained, save_pretrained
from longseq.apps.genomics.collate import PadCollate
from longseq.apps.genomics.datamodule import GenomeLMDataModule, SequenceClassificationDataModule
from longseq.apps.genomics.datasets import GenomeWindowDataset, SequenceClassificationDataset, Window
from longseq.apps.genomics.fasta import ReadReport, ReadResult, SequenceRecord, read_fasta, read_fastq, read_sequences
from longseq.apps.genomics.markov import MarkovModel
from longseq.apps.genomics.models import dna_classifier, model_context
from longseq.apps.genomics.module import CausalLMModule, ClassificationModule, GenomicsModule
from longseq.apps.genomics.pipeline import GenomicsPipeline, ScoreResult, plan_windows
from longseq.apps.genomics.sources import load_ecoli_k12, load_human_nontata_promoters, load_ienhancer
from longseq.apps.genomics.splits import kfold_splits
from longseq.apps.genomics.tables import encode_labels, read_label_table, read_sequence_table
from longseq.apps.genomics.tokenizer import DNATokenizer

__all__ = [
    "CausalLMModule",
    "ClassificationModule",
    "DNATokenizer",
    "ExportPretrained",
    "GenomeLMDataModule",
    "GenomicsModule",
    "GenomicsPipeline",
    "GenomeWindowDataset",
    "MarkovModel",
    "PadCollate",
    "PretrainedInfo",
    "ReadReport",
    "ReadResult",
    "ScoreResult",
    "SequenceClassificationDataModule",
    "SequenceClassificationDataset",
    "SequenceError",
    "SequenceRecord",
    "SequenceLengthWarmup",
    "SequenceWarning",
    "Window",
    "dna_classifier",
    "encode_labels",
    "kfold_splits",
    "load_ecoli_k12",
    "load_human_nontata_promoters",
    "load_ienhancer",
    "load_pretrained",
    "model_context",
    "normalize_sequence",
    "plan_windows",
    "read_fasta",
    "read_fastq",
    "read_label_table",
    "read_sequence_table",
    "read_sequences",
    "reverse_complement",
    "save_pretrained",
]
