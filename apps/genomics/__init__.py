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
"""

from longseq.apps.genomics.alphabet import SequenceError, SequenceWarning, normalize_sequence, reverse_complement
from longseq.apps.genomics.collate import PadCollate
from longseq.apps.genomics.datasets import GenomeWindowDataset, SequenceClassificationDataset, Window
from longseq.apps.genomics.fasta import ReadReport, ReadResult, SequenceRecord, read_fasta, read_fastq, read_sequences
from longseq.apps.genomics.sources import load_ecoli_k12, load_human_nontata_promoters, load_ienhancer
from longseq.apps.genomics.splits import kfold_splits
from longseq.apps.genomics.tables import encode_labels, read_label_table, read_sequence_table
from longseq.apps.genomics.tokenizer import DNATokenizer

__all__ = [
    "DNATokenizer",
    "GenomeWindowDataset",
    "PadCollate",
    "ReadReport",
    "ReadResult",
    "SequenceClassificationDataset",
    "SequenceError",
    "SequenceRecord",
    "SequenceWarning",
    "Window",
    "encode_labels",
    "kfold_splits",
    "load_ecoli_k12",
    "load_human_nontata_promoters",
    "load_ienhancer",
    "normalize_sequence",
    "read_fasta",
    "read_fastq",
    "read_label_table",
    "read_sequence_table",
    "read_sequences",
    "reverse_complement",
]
