"""The two left-to-right objectives, in the same batch format as blank infilling.

- causal: tokens = sample[:-1], labels = sample[1:], position ids 0..L-1 ([b, L]), loss 1 on
  every real label (0 on padding), no sep. L = seq_length; samples carry seq_length + 1 tokens.
- prefix-lm: a prefix LM in GLM's layout, i.e. GLM's document-level blank ([gMASK]) with the
  span always the suffix of the sample; no published GLM model was pretrained with it alone
  (ChatGLM-6B's pretraining was GLM's blank infilling with task masks, per its maintainers:
  --objective blank-infilling --task-mask). The first p tokens (p ~ U[1, m - 1] per sample,
  m = the tokens used) followed by [gMASK] form Part A (bidirectional, sep = p + 1); then <sop>
  and the rest of the sample, generated causally. Targets are aligned (Part B: sample[p:m]); positions count 0..p over
  Part A and stay at p ([gMASK]'s index) over Part B, block positions are 0 on Part A and
  1, 2, ... from <sop> on (1 throughout Part B with block_position off). The generated text runs
  on past the window, so there is no eop. L = seq_length, so m = seq_length - 1 sample tokens
  are used (the row is p + 1 + 1 + (m - 1 - p) = m + 1 long).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .common import SpecialTokenIds, as_token_array, check_samples, content_length, to_batch


def _stack(samples, width: int, max_length: int, pad: int):
    """Samples (each cut to `width`) in a [b, width] array padded with `pad`, and their lengths
    without trailing padding."""
    rows = [as_token_array(x, max_length, i, keep=width)
            for i, x in enumerate(check_samples(samples))]
    stacked = np.full((len(rows), width), pad, dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for i, x in enumerate(rows):
        stacked[i, :len(x)] = x
        lengths[i] = content_length(x, pad)
    return stacked, lengths


class CausalCollator:
    """Next-token prediction over the packed sample."""

    def __init__(self, special_ids, seq_length: int):
        self.special = SpecialTokenIds.coerce(special_ids)
        if seq_length < 1:
            raise ValueError(f"seq_length {seq_length} must be positive")
        self.seq_length = self.length = seq_length

    def __call__(self, samples: Sequence[np.ndarray], rng: np.random.Generator = None) -> dict:
        pad, L = self.special.pad, self.length
        stacked, _ = _stack(samples, L + 1, L + 1, pad)
        labels = stacked[:, 1:]
        return to_batch({
            "tokens": stacked[:, :-1],
            "labels": labels,
            "loss_mask": (labels != pad).astype(np.float32),
            "position_ids": np.broadcast_to(np.arange(L, dtype=np.int64), labels.shape).copy(),
        })


class PrefixLMCollator:
    """Prefix LM in GLM's layout: Part A = prefix + [gMASK], Part B = <sop> + the rest."""

    def __init__(self, special_ids, seq_length: int, block_position: bool = True):
        self.special = SpecialTokenIds.coerce(special_ids)
        if seq_length < 3:
            raise ValueError(f"seq_length {seq_length}: the prefix LM needs at least 3")
        self.seq_length = self.length = seq_length
        self.block_position = block_position

    def __call__(self, samples: Sequence[np.ndarray], rng: np.random.Generator) -> dict:
        s, L = self.special, self.length
        x, m = _stack(samples, L - 1, L + 1, s.pad)
        # Prefix length p ~ U[1, m - 1]; a sample of under two tokens is all prefix.
        p = np.where(m >= 2, rng.integers(1, np.maximum(m, 2)), m)[:, None]
        idx = np.arange(L, dtype=np.int64)[None, :]
        valid = idx <= m[:, None]  # the row is m + 1 tokens long

        def take(shift):
            return np.take_along_axis(x, np.clip(idx - shift, 0, L - 2), axis=1)

        tokens = np.where(idx < p, take(0), np.where(idx == p, s.gmask,
                                                     np.where(idx == p + 1, s.sop, take(2))))
        labels = np.where(idx < p, take(0), np.where(idx == p, s.gmask, take(1)))
        loss_mask = valid & (idx > p) & (labels != s.pad)
        positions = np.where(idx <= p, idx, p)
        blocks = np.where(idx <= p, 0, idx - p if self.block_position else 1)
        position_ids = np.stack([positions, blocks], axis=1)
        return to_batch({
            "tokens": np.where(valid, tokens, s.pad),
            "labels": np.where(valid, labels, s.pad),
            "loss_mask": loss_mask.astype(np.float32),
            "position_ids": np.where(valid[:, None], position_ids, 0),
            "sep": p[:, 0] + 1,
        })
