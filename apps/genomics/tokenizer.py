"""Character-level DNA tokenizer with special tokens; reverse complement of token ids.

Vocabulary (ids fixed, :attr:`DNATokenizer.vocab`)::

    0 [PAD]   1 [BOS]   2 [EOS]   3 [MASK]   4 [CLS]   5 N   6 A   7 C   8 G   9 T

Encoding is case-insensitive: soft-masked lowercase bases get the same ids as uppercase (whether to
keep soft-masking is the reader's choice, see :mod:`longseq.apps.genomics.fasta`), so decoding gives
uppercase. Only ``ACGTN`` are accepted; IUPAC ambiguity codes must be mapped to ``N`` by the reader
(:func:`~longseq.apps.genomics.alphabet.normalize_sequence`). Encoding and decoding go through
256-entry lookup tables in numpy, so a 4.6 Mb genome encodes in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from longseq.apps.genomics.alphabet import SequenceError, ascii_codes

__all__ = ["DNATokenizer"]

_SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[MASK]", "[CLS]")
_BASES = "NACGT"


def _lookup_tables() -> tuple[np.ndarray, np.ndarray]:
    """(char byte -> id or -1, id -> char byte) for the bases."""
    encode = np.full(256, -1, dtype=np.int16)
    decode = np.zeros(len(_SPECIALS) + len(_BASES), dtype=np.uint8)
    for offset, base in enumerate(_BASES):
        token = len(_SPECIALS) + offset
        encode[ord(base)] = encode[ord(base.lower())] = token
        decode[token] = ord(base)
    return encode, decode


_ENCODE, _DECODE = _lookup_tables()


class DNATokenizer:
    """Stateless character tokenizer for DNA; see the module docstring for the ids.

    All methods accept and return CPU tensors; ids are ``torch.long`` unless a ``dtype`` is given
    (``torch.uint8`` stores a genome in one byte per base).
    """

    pad_id = 0
    bos_id = 1
    eos_id = 2
    mask_id = 3
    cls_id = 4
    n_id = 5
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(_SPECIALS + tuple(_BASES))}
    vocab_size = len(vocab)
    special_ids = tuple(range(len(_SPECIALS)))
    """Ids that are not bases (pad, bos, eos, mask, cls)."""

    @property
    def complement_ids(self) -> torch.Tensor:
        """``(vocab_size,)`` long: the id of each token's complement (A<->T, C<->G, N->N, specials unchanged)."""
        table = torch.arange(self.vocab_size)
        a, c, g, t = (self.vocab[b] for b in "ACGT")
        table[[a, c, g, t]] = torch.tensor([t, g, c, a])
        return table

    def token_to_id(self, token: str) -> int:
        """The id of a token (``"A"``, ``"a"`` or ``"[PAD]"``); ``KeyError`` listing the vocabulary otherwise."""
        key = token.upper() if len(token) == 1 else token
        if key not in self.vocab:
            raise KeyError(f"unknown token {token!r}; vocabulary: {list(self.vocab)}")
        return self.vocab[key]

    def id_to_token(self, token_id: int) -> str:
        """The token string of an id."""
        if not 0 <= token_id < self.vocab_size:
            raise KeyError(f"token id must be in [0, {self.vocab_size}), got {token_id}")
        return (_SPECIALS + tuple(_BASES))[token_id]

    def _prefix(self, add_cls: bool, add_bos: bool) -> list[int]:
        return ([self.cls_id] if add_cls else []) + ([self.bos_id] if add_bos else [])

    def _lookup(self, text: str, offsets: np.ndarray | None = None, names: Sequence[str] | None = None) -> np.ndarray:
        """``(len(text),)`` int16 ids of ``text``; errors name the position (and the sequence, by index
        or by ``names``, when ``offsets``, the start of each joined sequence, is given)."""

        def where(pos: int) -> str:
            if offsets is None:
                return f"position {pos + 1} (1-based)"
            row = int(np.searchsorted(offsets, pos, side="right")) - 1
            which = row if names is None else repr(names[row])
            return f"sequence {which}, position {pos - int(offsets[row]) + 1} (1-based)"

        raw = ascii_codes(text, lambda pos: f"cannot encode {where(pos)}")
        ids = _ENCODE[raw]
        bad = np.flatnonzero(ids < 0)
        if bad.size:
            pos = int(bad[0])
            raise SequenceError(
                f"cannot encode {text[pos]!r} at {where(pos)}: the tokenizer takes A, C, G, T, N (any case); "
                "map IUPAC codes to N when reading (normalize_sequence / read_sequences)"
            )
        return ids

    def encode(
        self,
        seq: str,
        *,
        add_cls: bool = False,
        add_bos: bool = False,
        add_eos: bool = False,
        dtype: torch.dtype = torch.long,
    ) -> torch.Tensor:
        """Token ids ``(L',)`` of one sequence, ``L' = len(seq) + add_cls + add_bos + add_eos``
        (order: ``[CLS] [BOS] bases [EOS]``).

        Raises:
            SequenceError: a character other than ``ACGTN`` (any case), naming its 1-based position.
        """
        ids = self._lookup(seq)
        prefix = self._prefix(add_cls, add_bos)
        if prefix or add_eos:
            ids = np.concatenate([np.array(prefix, np.int16), ids, np.array([self.eos_id] * add_eos, np.int16)])
        return torch.from_numpy(ids).to(dtype)

    def encode_many(
        self, seqs: Sequence[str], *, dtype: torch.dtype = torch.uint8, names: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Ids of several sequences concatenated, ``(T,)`` (default uint8: one byte per base), and their
        boundaries ``(N+1,)`` int64 (sequence ``i`` is ``ids[offsets[i]:offsets[i + 1]]``); no special
        tokens. Errors name the sequence by index, or by ``names[i]`` when given."""
        if names is not None and len(names) != len(seqs):
            raise ValueError(f"names must have one entry per sequence ({len(seqs)}), got {len(names)}")
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = self._lookup("".join(seqs), offsets[:-1], names)
        return torch.from_numpy(flat).to(dtype), offsets

    def encode_batch(
        self,
        seqs: Sequence[str],
        *,
        add_cls: bool = False,
        add_bos: bool = False,
        add_eos: bool = False,
        dtype: torch.dtype = torch.long,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids ``(B, L_max)`` (pad id 0) and bool attention mask ``(B, L_max)`` of several sequences,
        encoded with one table lookup over their concatenation."""
        if len(seqs) == 0:
            raise ValueError("encode_batch needs at least one sequence, got an empty list")
        flat, offsets = self.encode_many(seqs, dtype=torch.int16)
        lengths = np.diff(offsets)
        prefix = self._prefix(add_cls, add_bos)
        rows = lengths + len(prefix) + int(add_eos)  # (B,)
        width = int(rows.max())
        cols = np.arange(width)
        out = np.full((len(seqs), width), self.pad_id, dtype=np.int16)  # (B, L_max)
        out[(cols >= len(prefix)) & (cols < (len(prefix) + lengths)[:, None])] = flat.numpy()
        out[:, : len(prefix)] = prefix
        if add_eos:
            out[np.arange(len(seqs)), len(prefix) + lengths] = self.eos_id
        mask = cols < rows[:, None]
        return torch.from_numpy(out).to(dtype), torch.from_numpy(mask)

    def decode(self, ids: torch.Tensor | np.ndarray | Sequence[int], *, skip_special_tokens: bool = True) -> str:
        """The string of a 1-D id sequence. Special tokens are dropped, or written as ``[PAD]``, ``[BOS]``
        ... with ``skip_special_tokens=False``."""
        arr = ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
        if arr.ndim != 1:
            raise ValueError(f"decode takes a 1-D id sequence, got shape {arr.shape}; use decode_batch for (B, L)")
        arr = arr.astype(np.int64, copy=False)
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = arr[(arr < 0) | (arr >= self.vocab_size)][0]
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got {int(bad)}")
        special = arr < len(_SPECIALS)
        if skip_special_tokens or not special.any():
            return _DECODE[arr[~special]].tobytes().decode("ascii")
        return "".join(self.id_to_token(int(i)) for i in arr)

    def decode_batch(
        self,
        ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        skip_special_tokens: bool = True,
    ) -> list[str]:
        """Strings of padded ids ``(B, L)``; positions where ``attention_mask`` is False are left out."""
        if ids.dim() != 2:
            raise ValueError(f"decode_batch takes ids of shape (B, L), got {tuple(ids.shape)}")
        if attention_mask is not None and attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of ids {tuple(ids.shape)}, got {tuple(attention_mask.shape)}"
            )
        rows = ids if attention_mask is None else [row[m] for row, m in zip(ids, attention_mask.bool())]
        return [self.decode(row, skip_special_tokens=skip_special_tokens) for row in rows]

    def reverse_complement_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Reverse complement of token ids ``(..., L)`` along the last dim, any integer dtype and device.

        Base tokens (N, A, C, G, T) are complemented and their order reversed within each row;
        special tokens keep their positions, so ``[BOS] A C G [EOS] [PAD]`` becomes
        ``[BOS] C G T [EOS] [PAD]``. Apply before masking (a ``[MASK]`` token stays where it is).
        An involution: applying it twice gives the input back.
        """
        if ids.dim() == 0 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(f"ids must be an integer tensor (..., L), got dtype {ids.dtype} shape {tuple(ids.shape)}")
        a_id, t_id = self.vocab["A"], self.vocab["T"]
        comp = torch.where(ids >= a_id, (a_id + t_id) - ids, ids)  # (..., L): A<->T, C<->G (ids 6..9), rest kept
        is_base = ids >= len(_SPECIALS)  # (..., L)
        if bool(is_base.all()):
            return comp.flip(-1)
        # The r-th base of a row moves to where the (k-1-r)-th base was (k = bases in the row).
        rank = is_base.long().cumsum(-1) - 1  # (..., L)
        count = is_base.sum(-1, keepdim=True)  # (..., 1)
        # A stable sort with bases first lists each row's base positions in order: rank -> position.
        by_rank = torch.argsort((~is_base).to(torch.uint8), dim=-1, stable=True)  # (..., L)
        source = by_rank.gather(-1, (count - 1 - rank).clamp(min=0))  # (..., L)
        return torch.where(is_base, comp.gather(-1, source), ids)
