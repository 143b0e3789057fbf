"""Examples to token ids, once per data file, with the length check and `--truncate`.

Cloze (GLM's layout, `EncodedCloze`):
    part_a  = [CLS] (only with prepend_cls) + text before the blank + [MASK] + text after it
              + end of text (eod);
    answers = each candidate's ids; the whitespace before the blank goes with the answer, so
              "Answer: [MASK]" and " Yes" read as "Answer: Yes".
A row of the multi-token layout is part_a + <sop> + an answer, so it needs
len(part_a) + 1 + len(answer) tokens; the single-token layout needs len(part_a) + 1, and
every answer must be one token.
Sequence classification (`EncodedSequence`): [CLS] (with prepend_cls) + text + (eod +
text_pair) + eod.

Rows longer than seq_length are an error that counts them and names `--truncate`; with
truncate, the example's own text is cut (see truncation.py) and never the mask or an answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .errors import FinetuneDataError
from .examples import MASK, ClozeExample, SequenceExample, shortenable
from .labels import EncodedLabel
from .text_pieces import PieceTokenizer
from .truncation import shorten


@dataclass(frozen=True)
class EncodedCloze:
    part_a: np.ndarray  # int64
    mask_position: int
    answers: tuple  # int64 arrays
    label: int
    index: int


@dataclass(frozen=True)
class EncodedSequence:
    tokens: np.ndarray  # int64
    label: EncodedLabel
    index: int


@dataclass(frozen=True)
class EncodedSplit:
    """A file's encoded examples and how many of them --truncate cut."""
    examples: list
    source: str
    num_truncated: int


def _ids(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


class _Encoder:
    """Shared by both heads: fit each example into seq_length (or refuse), then encode it."""

    def __init__(self, tokenizer, seq_length: int, prepend_cls: bool, truncate: bool):
        self.tokenizer, self.seq_length = tokenizer, seq_length
        self.pieces = PieceTokenizer(tokenizer)
        self.prefix = [tokenizer.cls] if prepend_cls else []
        self.truncate = truncate

    def _fit(self, examples: Sequence, source: str, row_length, what: str) -> tuple:
        """Each example's parts, cut to fit when truncating; the number cut."""
        parts = [self._parts(example) for example in examples]
        lengths = [row_length(p, example) for p, example in zip(parts, examples)]
        too_long = [i for i, n in enumerate(lengths) if n > self.seq_length]
        if too_long and not self.truncate:
            longest = max(too_long, key=lambda i: lengths[i])
            raise FinetuneDataError(
                f"{source}: {len(too_long)} of {len(examples)} examples are longer than "
                f"--seq-length {self.seq_length} tokens (the longest, line "
                f"{examples[longest].line}, needs {lengths[longest]}); pass --truncate to cut "
                "their text, or raise --seq-length")
        for i in too_long:
            cut = shorten(parts[i], lambda p: row_length(p, examples[i]), self.seq_length,
                          self.tokenizer)
            if cut is None:
                raise FinetuneDataError(
                    f"{source} line {examples[i].line}: even with its text cut, the example "
                    f"needs more than --seq-length {self.seq_length} tokens ({what}); raise "
                    "--seq-length")
            parts[i] = cut
        return parts, len(too_long)


class ClozeEncoder(_Encoder):
    """`single_token` encodes for GLM's single-token cloze (every answer one token)."""

    def __init__(self, tokenizer, seq_length: int, *, prepend_cls: bool, truncate: bool = False,
                 single_token: bool = False):
        super().__init__(tokenizer, seq_length, prepend_cls, truncate)
        self.single_token = single_token

    @staticmethod
    def _parts(example: ClozeExample) -> tuple:
        return example.parts

    def _encode(self, parts: tuple, answers: tuple):
        """(part_a, mask_position, answer ids)."""
        blank = parts.index(MASK)
        before = "".join(p.text for p in parts[:blank])
        after = "".join(p.text for p in parts[blank + 1:])
        head = before.rstrip()
        part_a = self.prefix + (self.pieces.start(head) if head else [])
        mask_position = len(part_a)
        part_a += [self.tokenizer.mask] + self.pieces.continuation(after) + [self.tokenizer.eod]
        spaced = len(head) < len(before)
        return part_a, mask_position, tuple(self._answer(a, head, spaced) for a in answers)

    def _answer(self, answer: str, head: str, spaced: bool) -> list:
        if not head:
            return self.pieces.start(answer.lstrip())
        return self.pieces.continuation(" " + answer.lstrip() if spaced else answer)

    def _row_length(self, parts: tuple, example: ClozeExample) -> int:
        part_a, _, answers = self._encode(parts, example.answers)
        return len(part_a) + 1 + (0 if self.single_token else max(map(len, answers)))

    def encode(self, examples: Sequence[ClozeExample], source: str) -> EncodedSplit:
        parts, cut = self._fit(examples, source, self._row_length,
                               "the pattern, [MASK], <sop> and the longest answer")
        encoded = []
        for p, example in zip(parts, examples):
            part_a, mask_position, answers = self._encode(p, example.answers)
            if self.single_token:
                self._check_single_tokens(answers, example, source)
            encoded.append(EncodedCloze(_ids(part_a), mask_position,
                                        tuple(_ids(a) for a in answers), example.label,
                                        example.index))
        return EncodedSplit(encoded, source, cut)

    def _check_single_tokens(self, answers: tuple, example: ClozeExample, source: str):
        for c, ids in enumerate(answers):
            if len(ids) == 1:
                continue
            text, pieces = example.answers[c], self.pieces.describe(ids)
            if example.label_names is not None:
                name = example.label_names[c]
                raise FinetuneDataError(
                    f"--verbalizer: label {name!r} is answered by {text!r}, {len(ids)} tokens "
                    f"{pieces}, but single-token cloze scoring needs one token per label; give "
                    f"a one-token --verbalizer {name}=WORD or score multi-token answers "
                    "(--multi-token)")
            raise FinetuneDataError(
                f"{source} line {example.line}: choice {c} {text!r} is {len(ids)} tokens "
                f"{pieces}, but single-token cloze scoring needs one token per choice; score "
                "multi-token answers (--multi-token)")


class SequenceEncoder(_Encoder):
    def __init__(self, tokenizer, seq_length: int, *, prepend_cls: bool,
                 truncate: bool = False):
        super().__init__(tokenizer, seq_length, prepend_cls, truncate)

    @staticmethod
    def _parts(example: SequenceExample) -> tuple:
        texts = (example.text,) if example.text_pair is None else \
            (example.text, example.text_pair)
        return tuple(shortenable(t) for t in texts)

    def _encode(self, parts: tuple) -> list:
        ids = list(self.prefix)
        for part in parts:
            ids += self.pieces.start(part.text) + [self.tokenizer.eod]
        return ids

    def encode(self, examples: Sequence[SequenceExample], source: str) -> EncodedSplit:
        parts, cut = self._fit(examples, source, lambda p, _: len(self._encode(p)),
                               "the separators alone")
        return EncodedSplit([EncodedSequence(_ids(self._encode(p)), example.label,
                                             example.index)
                             for p, example in zip(parts, examples)], source, cut)
