"""Encoded examples to model batches: numpy, deterministic, one static shape per collator.

Every row is seq_length tokens; the rest of a row is padding (pad id in tokens and labels,
positions 0, loss 0). position_ids are [rows, 2, seq_length] = (position, block position).

MultiTokenClozeCollator (GLM's GLMForMultiTokenCloze), one row per (example, choice),
example-major (row = i * num_choices + c):
    tokens        int64   [B*C, s]  part_a, then at sep: <sop> a_1 .. a_k
    labels        int64   [B*C, s]  part_a repeated, then at sep: a_1 .. a_k <eop>
    loss_mask     float32 [B*C, s]  1 on the k + 1 answer targets (its sum is k + 1)
    position_ids  int64   [B*C, 2, s]  Part A: 0..sep-1 / 0; Part B: the [MASK] index / 1..k+1
    sep           int64   [B*C]     len(part_a), the bidirectional prefix
    choice_mask   bool    [B, C]    False for padded choices (their rows are all padding,
                                    sep 0)
    label         int64   [B]       the right choice (-1: unlabeled)
    index         int64   [B]       the example's ordinal in its file
SingleTokenClozeCollator (GLMForSingleTokenCloze), one row per example:
    tokens, position_ids, sep  as above with Part B = <sop> alone (position = the [MASK] index,
                               block position 1)
    answer_position   int64 [B]     = sep, the <sop> whose logits score the candidates
    choice_token_ids  int64 [B, C]  each choice's one token (pad for padded choices)
    choice_mask, label, index       as above
SequenceClassificationCollator (transformers' GlmForSequenceClassification: the model scores
the rightmost non-pad token):
    tokens        int64   [B, s]    right-padded with the pad id
    position_ids  int64   [B, 2, s] positions 0..n-1, block positions 0
    label         int64 [B] (single-label) | float32 [B] (regression) |
                  float32 [B, num_labels] (multi-label, multi-hot)
    index         int64   [B]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..objectives.common import SpecialTokenIds, to_batch
from .labels import MULTI_LABEL, PROBLEM_TYPES, REGRESSION


def _check_fits(length: int, seq_length: int, index: int):
    if length > seq_length:
        raise ValueError(f"example {index} needs {length} tokens, more than seq_length "
                         f"{seq_length}; encode with the same seq_length")


def _rows(count: int, seq_length: int, pad: int) -> dict:
    return {"tokens": np.full((count, seq_length), pad, dtype=np.int64),
            "position_ids": np.zeros((count, 2, seq_length), dtype=np.int64)}


def _place(out: dict, row: int, ids: np.ndarray):
    """`ids` at the start of a row, at positions 0.. (block positions stay 0)."""
    out["tokens"][row, :len(ids)] = ids
    out["position_ids"][row, 0, :len(ids)] = np.arange(len(ids))


class _ClozeCollator:
    def __init__(self, seq_length: int, num_choices: int, special_ids):
        self.seq_length, self.num_choices = seq_length, num_choices
        self.special = SpecialTokenIds.coerce(special_ids)

    def _choice_fields(self, examples: Sequence) -> dict:
        """choice_mask, label and index of a batch."""
        mask = np.zeros((len(examples), self.num_choices), dtype=bool)
        for i, example in enumerate(examples):
            if len(example.answers) > self.num_choices:
                raise ValueError(f"example {example.index} has {len(example.answers)} choices, "
                                 f"more than num_choices {self.num_choices}; size num_choices "
                                 "with max_num_choices over all splits")
            mask[i, :len(example.answers)] = True
        return {"choice_mask": mask,
                "label": np.array([e.label for e in examples], dtype=np.int64),
                "index": np.array([e.index for e in examples], dtype=np.int64)}


class MultiTokenClozeCollator(_ClozeCollator):
    def __call__(self, examples: Sequence) -> dict:
        c, s = self.num_choices, self.seq_length
        rows = len(examples) * c
        out = {**_rows(rows, s, self.special.pad), "sep": np.zeros(rows, dtype=np.int64),
               "labels": np.full((rows, s), self.special.pad, dtype=np.int64),
               "loss_mask": np.zeros((rows, s), dtype=np.float32),
               **self._choice_fields(examples)}
        for i, example in enumerate(examples):
            n = len(example.part_a)
            for j, answer in enumerate(example.answers):
                row, k = i * c + j, len(answer)
                _check_fits(n + 1 + k, s, example.index)
                _place(out, row, example.part_a)
                out["sep"][row] = n
                out["labels"][row, :n] = example.part_a
                out["tokens"][row, n] = self.special.sop
                out["tokens"][row, n + 1:n + 1 + k] = answer
                out["labels"][row, n:n + k] = answer
                out["labels"][row, n + k] = self.special.eop
                out["loss_mask"][row, n:n + k + 1] = 1
                out["position_ids"][row, 0, n:n + k + 1] = example.mask_position
                out["position_ids"][row, 1, n:n + k + 1] = np.arange(1, k + 2)
        return to_batch(out)


class SingleTokenClozeCollator(_ClozeCollator):
    def __call__(self, examples: Sequence) -> dict:
        out = {**_rows(len(examples), self.seq_length, self.special.pad),
               "sep": np.zeros(len(examples), dtype=np.int64),
               "choice_token_ids": np.full((len(examples), self.num_choices), self.special.pad,
                                           dtype=np.int64),
               **self._choice_fields(examples)}
        for i, example in enumerate(examples):
            if any(len(answer) != 1 for answer in example.answers):
                raise ValueError(f"example {example.index} has an answer that is not one "
                                 "token; encode with ClozeEncoder(single_token=True)")
            n = len(example.part_a)
            _check_fits(n + 1, self.seq_length, example.index)
            _place(out, i, example.part_a)
            out["sep"][i] = n
            out["tokens"][i, n] = self.special.sop
            out["position_ids"][i, :, n] = (example.mask_position, 1)
            out["choice_token_ids"][i, :len(example.answers)] = [a[0] for a in example.answers]
        out["answer_position"] = out["sep"].copy()
        return to_batch(out)


class SequenceClassificationCollator:
    def __init__(self, seq_length: int, problem_type: str, num_labels: int, special_ids):
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem type {problem_type!r}: choose one of "
                             f"{', '.join(PROBLEM_TYPES)}")
        self.seq_length, self.problem_type, self.num_labels = seq_length, problem_type, \
            num_labels
        self.special = SpecialTokenIds.coerce(special_ids)

    def _labels(self, examples: Sequence) -> np.ndarray:
        labels = [e.label for e in examples]
        if self.problem_type == MULTI_LABEL:
            return np.array(labels, dtype=np.float32).reshape(len(examples), self.num_labels)
        if self.problem_type == REGRESSION:
            return np.array(labels, dtype=np.float32)
        return np.array(labels, dtype=np.int64)

    def __call__(self, examples: Sequence) -> dict:
        out = {**_rows(len(examples), self.seq_length, self.special.pad),
               "label": self._labels(examples),
               "index": np.array([e.index for e in examples], dtype=np.int64)}
        for i, example in enumerate(examples):
            _check_fits(len(example.tokens), self.seq_length, example.index)
            _place(out, i, example.tokens)
        return to_batch(out)
