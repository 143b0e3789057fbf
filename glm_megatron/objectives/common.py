"""What every objective's collation shares: special token ids, the per-micro-batch random
generator, the sentence-end lookup table and sample preparation.

Collators run in DataLoader workers: they use numpy only and hand torch tensors out at the end.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

SPECIAL_TOKEN_NAMES = ("mask", "smask", "gmask", "sop", "eop", "dblock", "pad", "eod")


@dataclass(frozen=True)
class SpecialTokenIds:
    """GLM's special token ids; the field names are the tokenizer's property names."""
    mask: int
    smask: int
    gmask: int
    sop: int
    eop: int
    dblock: int
    pad: int
    eod: int
    cls: Optional[int] = None  # [CLS], which GLM puts before each document (--prepend-cls)

    def __post_init__(self):
        for name in SPECIAL_TOKEN_NAMES + ("cls",):
            value = getattr(self, name)
            if name == "cls" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"special token id {name}={value!r} must be a non-negative int")
            object.__setattr__(self, name, int(value))
        if self.pad == self.eod:
            raise ValueError(f"pad and eod share id {self.pad}: padding would end documents")

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "SpecialTokenIds":
        """From any object with the properties mask, smask, gmask, sop, eop, dblock, pad, eod
        (and cls, when it has one)."""
        return cls(**{name: getattr(tokenizer, name) for name in SPECIAL_TOKEN_NAMES},
                   cls=getattr(tokenizer, "cls", None))

    @classmethod
    def coerce(cls, value) -> "SpecialTokenIds":
        """A SpecialTokenIds, a mapping with those names, or a tokenizer."""
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = set(value) - set(SPECIAL_TOKEN_NAMES) - {"cls"}
            if unknown:
                raise ValueError(f"unknown special token names {sorted(unknown)}; expected "
                                 f"{', '.join(SPECIAL_TOKEN_NAMES)}")
            return cls(**value)
        return cls.from_tokenizer(value)

    def as_dict(self) -> dict:
        """The ids that are set, by name."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def microbatch_rng(seed: int, microbatch: int, split: int = 0) -> np.random.Generator:
    """The generator for one micro-batch: a pure function of its coordinates.

    `microbatch` is the micro-batch's ordinal in its split's sample stream (its first sample's
    position // micro_batch_size). In training that is iteration * (global_batch / micro_batch)
    + microbatch_index * dp_size + dp_rank: a function of (seed, iteration, DP rank, micro-batch
    index), and the same group of samples gets the same stream at every DP size, in whichever
    worker process collates it and after a resume. `split` (0 train, 1 valid, 2 test) keeps
    the streams apart. Different coordinates give independent streams (NumPy's SeedSequence).
    """
    words = (seed, microbatch, split)
    for name, word in zip(("seed", "microbatch", "split"), words):
        if isinstance(word, bool) or not isinstance(word, (int, np.integer)) or word < 0:
            raise ValueError(f"microbatch_rng: {name}={word!r} must be a non-negative int")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


# Sentence-final punctuation (ASCII, CJK and full-width forms) and the closing quotes/brackets
# that may follow it inside the same piece ('."', '。」').
_SENTENCE_FINAL = set(".?!;:。？！；：．｡…")
_CLOSERS = "\"')]}’”»」』）】〉》＂＇"
_TRAILING_SPACE = " \t\u2581\u3000"  # includes SentencePiece's '▁' and the ideographic space
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def is_sentence_end_piece(piece: str) -> bool:
    """Whether a vocabulary piece ends a sentence: it contains a newline, or its last character
    (ignoring trailing spaces and closing quotes/brackets) is . ? ! ; : or a CJK/full-width
    equivalent. Accepts SentencePiece pieces ('▁.', byte pieces such as '<0x0A>') or the
    decoded text of one token."""
    match = _BYTE_PIECE.match(piece)
    if match:
        byte = int(match.group(1), 16)
        piece = chr(byte) if byte < 0x80 else ""
    if "\n" in piece or "\r" in piece:
        return True
    stripped = piece.rstrip(_TRAILING_SPACE).rstrip(_CLOSERS)
    return bool(stripped) and stripped[-1] in _SENTENCE_FINAL


def sentence_end_table(pieces: Sequence[str], vocab_size: Optional[int] = None) -> np.ndarray:
    """Boolean lookup table over token ids: table[id] is True when that token ends a sentence.

    `pieces[i]` is token i's piece (or decoded text); ids from len(pieces) up to `vocab_size`
    (special tokens, embedding padding) are never sentence ends. Build it once per tokenizer,
    e.g. from `[tokenizer.detokenize([i]) for i in range(tokenizer.vocab_size)]`.
    """
    size = len(pieces) if vocab_size is None else max(int(vocab_size), len(pieces))
    table = np.zeros(size, dtype=bool)
    hits = [i for i, piece in enumerate(pieces) if is_sentence_end_piece(piece)]
    table[np.asarray(hits, dtype=np.int64)] = True
    return table


def check_sentence_end_table(table, special: SpecialTokenIds) -> np.ndarray:
    """The table as a boolean array covering every special id; special ids never end
    sentences."""
    table = np.asarray(table)
    if table.ndim != 1 or table.dtype != bool:
        raise ValueError("sentence_end_table must be a 1-D boolean numpy array over token ids")
    needed = max(special.as_dict().values()) + 1
    if len(table) < needed:
        table = np.concatenate([table, np.zeros(needed - len(table), dtype=bool)])
    else:
        table = table.copy()
    table[list(special.as_dict().values())] = False
    return table


def as_token_array(sample, max_length: int, index: int, keep: Optional[int] = None) -> np.ndarray:
    """One sample as int64 ids: at most `max_length` accepted, the first `keep` (default all)
    returned."""
    if hasattr(sample, "numpy"):  # a torch tensor
        sample = sample.numpy()
    array = np.asarray(sample)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"sample {index}: expected a 1-D array of integer token ids, got "
                         f"shape {array.shape} dtype {array.dtype}")
    if len(array) > max_length:
        raise ValueError(f"sample {index} has {len(array)} tokens; this collator takes at most "
                         f"{max_length} (seq_length + 1)")
    return array[:keep].astype(np.int64, copy=False)


def content_length(tokens: np.ndarray, pad: int) -> int:
    """Length without the trailing run of padding (megatron-core pads the end of a sample)."""
    real = np.flatnonzero(tokens != pad)
    return int(real[-1]) + 1 if len(real) else 0


def to_batch(arrays: dict) -> dict:
    """numpy arrays -> torch tensors without copying."""
    import torch  # here, not at the top: the flags (which import this module) load without it

    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in arrays.items()}


def check_samples(samples: Iterable) -> list:
    samples = list(samples)
    if not samples:
        raise ValueError("collate needs at least one sample")
    return samples
