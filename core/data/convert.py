"""Conversions that turn a downloaded source file into the file as staged in the data root.

Most registered files are byte-identical to their source blob and need no conversion. A few were
converted when they were staged (see ``shared/data/MANIFEST.md``); each such :class:`DataFile` or
:class:`Collection` names its conversion in ``convert``:

``gzip``
    ``gzip -9 -n`` of the source (Bandai-Namco BVH). The GNU ``gzip`` program reproduces the staged
    bytes exactly; without it on ``PATH`` Python's :func:`gzip.compress` is used, whose deflate stream
    usually differs, so the sha256 check after download then fails.
``wav_to_flac``
    16-bit WAV -> FLAC, same rate, bit-exact samples (FSDD). Needs the optional package ``soundfile``.
``resample_flac_16k``
    44.1 kHz WAV -> float64, channel mean, ``scipy.signal.resample_poly(x, 160, 441)``, clip to
    ``[-1, 32767/32768]``, 16 kHz 16-bit FLAC (ESC-50). Needs ``soundfile`` and ``scipy``.
``esc50_fold4_csv``
    the fold-4 rows of ESC-50's ``meta/esc50.csv`` with ``.wav`` names changed to ``.flac``.

The download keeps the strict sha256 check after a conversion: FLAC encoding is lossless but its
bytes depend on the libFLAC version (the staged files were written by libsndfile 1.2.2 / libFLAC
1.4.3), so a conversion with other library versions may produce a different file; the download then
raises :class:`CorruptDataError` and the staged copy has to be placed by hand.
"""

from __future__ import annotations

import gzip
import importlib
import io
import shutil
import subprocess
from collections.abc import Callable
from types import ModuleType

from longseq.core.data.errors import DataError

__all__ = ["CONVERSIONS", "REQUIRES", "check_packages", "convert_bytes"]


REQUIRES: dict[str, tuple[str, ...]] = {
    "wav_to_flac": ("soundfile",),
    "resample_flac_16k": ("soundfile", "scipy"),
}
"""Optional packages each conversion needs (conversions not listed need none)."""


def _optional(module: str, conversion: str) -> ModuleType:
    """Import an optional module, or raise :class:`DataError` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise DataError(
            f"conversion '{conversion}' needs the optional package '{package}' "
            f"(pip install {package}), or place the staged files by hand"
        ) from None


def check_packages(conversion: str) -> None:
    """Raise :class:`DataError` naming the first optional package ``conversion`` needs but cannot import."""
    for package in REQUIRES.get(conversion, ()):
        _optional(package, conversion)


def _gzip(data: bytes) -> bytes:
    """Compress like ``gzip -9 -n``: with the GNU program when present, else with Python's zlib."""
    program = shutil.which("gzip")
    if program is not None:
        return subprocess.run([program, "-9", "-n", "-c"], input=data, capture_output=True, check=True).stdout
    return gzip.compress(data, compresslevel=9, mtime=0)


def _wav_to_flac(data: bytes) -> bytes:
    """Re-encode a 16-bit PCM WAV as FLAC with the same sample rate and samples."""
    sf = _optional("soundfile", "wav_to_flac")
    samples, rate = sf.read(io.BytesIO(data), dtype="int16")
    out = io.BytesIO()
    sf.write(out, samples, rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def _resample_flac_16k(data: bytes) -> bytes:
    """Resample a 44.1 kHz WAV to 16 kHz mono 16-bit FLAC exactly as the ESC-50 clips were staged."""
    sf = _optional("soundfile", "resample_flac_16k")
    signal = _optional("scipy.signal", "resample_flac_16k")
    import numpy as np

    samples, rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    if rate != 44100:
        raise DataError(f"conversion 'resample_flac_16k' expects 44100 Hz input, got {rate} Hz")
    mono = samples.mean(axis=1)
    resampled = np.clip(signal.resample_poly(mono, up=160, down=441), -1.0, 32767 / 32768)
    out = io.BytesIO()
    sf.write(out, resampled, 16000, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def _esc50_fold4_csv(data: bytes) -> bytes:
    """Keep the header and the rows of fold 4 of ESC-50's metadata, renaming ``.wav`` to ``.flac``."""
    lines = data.decode("utf-8").splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > 1 and fields[1] == "4":
            fields[0] = fields[0].removesuffix(".wav") + ".flac"
            out.append(",".join(fields))
    return ("\n".join(out) + "\n").encode("utf-8")


CONVERSIONS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": _gzip,
    "wav_to_flac": _wav_to_flac,
    "resample_flac_16k": _resample_flac_16k,
    "esc50_fold4_csv": _esc50_fold4_csv,
}
"""Conversion name -> function mapping the source bytes to the staged bytes."""


def convert_bytes(conversion: str, data: bytes) -> bytes:
    """Apply the named conversion to ``data``; raises :class:`DataError` for an unknown name."""
    try:
        function = CONVERSIONS[conversion]
    except KeyError:
        raise DataError(f"unknown conversion '{conversion}'; known: {', '.join(sorted(CONVERSIONS))}") from None
    return function(data)
