"""Pins the exported names of each public module: adding or removing one is a deliberate edit here."""

from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC_API = {
    "longseq.kernels.rmsnorm": ["rms_norm", "rms_norm_ref"],
    "longseq.kernels.testing": [
        "EPSILON",
        "assert_close",
        "compile_backend",
        "empty_poisoned",
        "kernel_device",
        "max_abs_error",
        "poison",
    ],
    "longseq.core.data": [
        "Collection",
        "CorruptDataError",
        "DataError",
        "DataFile",
        "Dataset",
        "DownloadReport",
        "MissingDataError",
        "VerifyReport",
        "download",
        "get_dataset",
        "list_datasets",
        "register_dataset",
        "require",
        "resolve_root",
        "verify",
    ],
    "longseq.core.registry": [
        "create_mixer",
        "create_model",
        "list_mixers",
        "list_models",
        "register_mixer",
        "register_model",
    ],
    "longseq.core.mixers": ["MixerProtocol"],
    "longseq.core.packing": [
        "PackedBatch",
        "PackedCollate",
        "PackedStream",
        "PackingStats",
        "TokenBudgetBatchSampler",
        "cu_seqlens_from_lengths",
        "first_fit_decreasing",
        "input_length",
        "mask_prefix",
        "next_token_labels",
        "pack",
        "packed_to_pad",
        "packing_stats",
        "pad_to_packed",
        "position_ids_from_cu_seqlens",
        "segment_ids",
        "segment_mean",
        "segment_softmax",
        "segment_sum",
        "stream_pack",
        "unpack",
        "validate_cu_seqlens",
    ],
    "longseq.core.norms": ["LayerNorm", "NORMS", "RMSNorm", "create_norm"],
    "longseq.core.mlp": ["MLPS", "Mlp", "SwiGLU", "create_mlp"],
    "longseq.core.block": ["Block", "DropPath", "drop_path"],
    "longseq.core.backbone": ["BackboneConfig", "SequenceBackbone", "parse_mixer_pattern", "resolve_indices"],
    "longseq.core.heads": [
        "AttentionPool",
        "ClassificationHead",
        "LMHead",
        "POOLS",
        "TokenRegressionHead",
        "chunked_cross_entropy",
        "pool_sequences",
    ],
    "longseq.core.generation": [
        "DecoderProtocol",
        "GenerationConfig",
        "GenerationOutput",
        "generate",
        "sample_next_token",
        "top_k_filter",
        "top_p_filter",
    ],
    "longseq.core.models": [
        "LanguageModel",
        "build_from_config",
        "sequence_classifier_tiny",
        "transformer_lm_small",
        "transformer_lm_tiny",
    ],
    "longseq.core.attention": [
        "AUTO_ORDER",
        "Attention",
        "AttentionBackend",
        "AttentionConfig",
        "AttentionSpec",
        "ENV_VAR",
        "FEATURES",
        "KVCache",
        "MaskMod",
        "PositionScheme",
        "ScoreMod",
        "attend",
        "attention",
        "attention_ref",
        "create_positions",
        "format_support_matrix",
        "get_backend",
        "list_backends",
        "list_positions",
        "markdown_support_matrix",
        "probsparse_attention",
        "register_backend",
        "register_positions",
        "reset_fallback_warnings",
        "select_backend",
        "support_matrix",
    ],
    "longseq.apps.genomics": [
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
    ],
    "longseq.apps.timeseries.data": [
        "BENCHMARKS",
        "Benchmark",
        "FILL_POLICIES",
        "ForecastDataModule",
        "ForecastWindowDataset",
        "Irregularity",
        "MISSING_TOKENS",
        "SPLITS",
        "SeriesError",
        "SeriesTable",
        "Spacing",
        "SplitBorders",
        "SplitSpec",
        "StandardScaler",
        "benchmark_spec",
        "check_timestamps",
        "fill_missing",
        "load_benchmark",
        "load_series",
        "n_time_features",
        "protocol_borders",
        "read_series_csv",
        "time_features",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_exported_names_are_pinned(module):
    mod = importlib.import_module(module)
    exported = getattr(mod, "__all__", None)
    assert exported is not None, f"{module} must define __all__"
    assert sorted(exported) == sorted(PUBLIC_API[module])


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_exported_names_exist_and_are_documented(module):
    mod = importlib.import_module(module)
    assert mod.__doc__, f"{module} has no module docstring"
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):  # not typing aliases or constants
            assert obj.__doc__, f"{module}.{name} has no docstring"
