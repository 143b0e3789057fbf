"""GLM's autoregressive blank infilling as a numpy collation: packed samples in, model batches out.

One draw per micro-batch picks the mode (all samples of the micro-batch share it):
- token (probability bert_prob): spans with lengths ~ Poisson(avg_block_length) truncated to
  1..max_block_length (40) and renormalised (GLM's table stops at 39: a 1e-30 difference), drawn
  until int(bert_mask_ratio * n) tokens are covered; placed inside documents, never overlapping,
  at least one token apart. Mask [MASK].
- sentence (gap_sentence_prob): whole sentences, in random order, until int(gap_sentence_ratio *
  n) tokens are covered. Mask [sMASK] with task_mask, else [MASK].
- document (the rest): one span of length U[int(gpt_min_ratio * n), n - 2], drawn per sample
  (GLM draws one per micro-batch to limit its padding; rows here are static anyway). It is the
  suffix of the sample when the sample holds more than one document, or with probability
  gpt_infill_prob; otherwise it lies inside the single document (a final eod stays in Part A).
  Mask [gMASK] with task_mask, else [MASK].
Here n is the sample's length without trailing padding (and without the one extra token causal
samples carry). With probability short_seq_prob (one draw per micro-batch) every sample is first
cut to a random sub-segment of one drawn length U[32, seq_length - 2], moved to sentence
boundaries as GLM does (GLM cuts several per sample; a static batch keeps one).

Layout of one row (GLM's):
- Part A: the sample with every span collapsed to its mask token; position ids 0.. over Part A,
  block position ids 0.
- Part B: the spans, shuffled unless shuffle_blocks is off; a span s becomes input [sop] + s,
  target s + [eop]; all its tokens get the Part-A position of its mask token and block position
  ids 1 .. len(s) + 1. Exception, as in GLM: a document-mode suffix has no eop (the text goes
  on past the sample), so its input is [sop] + s[:-1] and its target s.
- With block_position off (GLM's --no-block-position) block position ids are 1 on all of Part B
  and 0 on Part A (GLM's make_block_data): the second table only tells Part B from Part A, and
  the position ids are unchanged.
- With block_mask_prob > 0 each span token of a Part-B input (not sop) becomes [dBLOCK] with that
  probability, in token mode only (as GLM).
- sep = len(Part A); labels are aligned with tokens (no shift); loss_mask is 1 exactly on the
  Part-B targets. Part-A labels repeat the Part-A tokens (masked out of the loss).

Static shape: every row has L = output_length(seq_length) = seq_length + 2 * max_spans, rounded
up to length_multiple, and max_spans = (L - seq_length) // 2. A row holds n + 2 * spans tokens
(n + 1 for a suffix) and n <= seq_length, so capping the span count at max_spans makes every
row fit; the rest is padding (pad id, loss 0, positions 0). By default max_spans =
ceil(r * seq_length / 2) with r the largest mask ratio of an enabled mode (1 span when only the
document mode is on): it is exceeded only when the chosen spans average under two tokens (token
mode averages 3.2 per span; sentence mode with many one-token "sentences" such as blank lines);
then the extra spans are dropped and the row covers less. Span lengths are also capped at
seq_length - 2 so that block position ids stay below seq_length (a longer "sentence" is split).

Documents are the runs of tokens between eod (or pad) tokens; sentences end after a token whose
entry in the sentence-end table is True, or at a document or sample end (the fragments at the
start and end of a packed sample count as sentences; GLM drops the unterminated fragment
before an eod, this keeps it). Token spans are spread over documents as in GLM: shorter
documents each take about bert_mask_ratio of their length, the longest takes the rest; a span
that does not fit moves to the longest document and is dropped if it does not fit there either,
so a sample of only very short documents is covered less (documents of 1-11 tokens: about
12.5%). A sample with no maskable token (all eod) becomes Part A only, with no loss.

Positions never reach seq_length (Part A is at most seq_length long, block ids at most
seq_length - 1), so max_position_embeddings >= seq_length suffices although L > seq_length.
With prepend_cls (GLM's pretraining of glm-large and glm-10b) every sample and every document
packed after an eod starts with [CLS], as in GLM's BlockDataset; the tail beyond seq_length is
cut, and [CLS] is never part of a span.
Not implemented from GLM: sentinel tokens,
context_mask_ratio, random_position, single_span_prob, masked_lm and encoder-decoder batches.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, fields
from typing import Optional, Sequence

import numpy as np

from ..config import ConfigError
from .common import (SpecialTokenIds, as_token_array, check_samples, check_sentence_end_table,
                     content_length, to_batch)

_SHORT_SEQ_MIN = 32  # GLM's shortest cut

# The three kinds of spans, one drawn per micro-batch; a batch's `mode` holds its index here.
BLANK_MODES = ("token", "sentence", "document")


def _probability(value) -> Optional[str]:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        return "must be a probability in [0, 1]"


def _open_ratio(value) -> Optional[str]:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        return "must be in (0, 1)"


def _positive(value) -> Optional[str]:
    if not (isinstance(value, (int, float)) and value > 0):
        return "must be positive"


def _positive_int(value) -> Optional[str]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        return "must be a positive integer"


def _knob(default, flag: str, help: str, check=None, negated_by_flag: bool = False):
    """A dataclass field that also states its command-line flag, help and range check: the one
    place each knob is written (flags, parsing and error messages are derived from it)."""
    return field(default=default, metadata={"flag": flag, "help": help, "check": check,
                                            "negated": negated_by_flag})


@dataclass
class BlankInfillingConfig:
    """GLM's blank-infilling knobs, named and defaulted as GLM's flags (underscores for dashes;
    shuffle_blocks and block_position are the negations of --no-shuffle-block and
    --no-block-position)."""
    bert_prob: float = _knob(0.5, "--bert-prob", "probability of the token-level mode",
                             _probability)
    gap_sentence_prob: float = _knob(
        0.0, "--gap-sentence-prob",
        "probability of the sentence-level mode; the document mode gets the rest", _probability)
    gpt_infill_prob: float = _knob(0.5, "--gpt-infill-prob",
                                   "document mode: probability that the span is the suffix",
                                   _probability)
    gpt_min_ratio: float = _knob(0.5, "--gpt-min-ratio",
                                 "document mode: shortest span as a fraction of the sample",
                                 _probability)
    avg_block_length: float = _knob(3.0, "--avg-block-length",
                                    "token mode: Poisson mean of the span lengths", _positive)
    bert_mask_ratio: float = _knob(0.15, "--bert-mask-ratio",
                                   "token mode: fraction of tokens masked", _open_ratio)
    gap_sentence_ratio: float = _knob(0.15, "--gap-sentence-ratio",
                                      "sentence mode: fraction of tokens masked", _open_ratio)
    block_mask_prob: float = _knob(
        0.0, "--block-mask-prob",
        "token mode: probability of replacing a Part-B input token by [dBLOCK]", _probability)
    short_seq_prob: float = _knob(
        0.0, "--short-seq-prob",
        "probability that a micro-batch is cut to shorter sub-segments", _probability)
    shuffle_blocks: bool = _knob(True, "--no-shuffle-block",
                                 "keep the spans in text order in Part B", negated_by_flag=True)
    task_mask: bool = _knob(False, "--task-mask",
                            "[sMASK] for sentences and [gMASK] for documents instead of [MASK]")
    block_position: bool = _knob(
        True, "--no-block-position",
        "block position ids 1 on all of Part B instead of 1, 2, ...", negated_by_flag=True)
    prepend_cls: bool = _knob(
        False, "--prepend-cls",
        "start every sample and packed document with [CLS], as GLM's pretraining of glm-large "
        "and glm-10b did (on in those presets' recipe)")
    max_block_length: int = _knob(40, "--max-block-length", "token mode: longest span",
                                  _positive_int)
    # Static shape (see the module docstring): None derives max_spans from the mask ratios.
    max_spans: Optional[int] = _knob(
        None, "--max-spans", "spans per row that the static length leaves room for; default "
        "ceil(mask ratio x seq length / 2)", _positive_int)
    length_multiple: int = _knob(8, "--blank-length-multiple",
                                 "round the static row length up to a multiple of this",
                                 _positive_int)

    def __post_init__(self):
        for knob in fields(self):
            value = getattr(self, knob.name)
            problem = knob.metadata["check"] and knob.metadata["check"](value)
            if problem:
                raise ConfigError(f"{knob.metadata['flag']} {value!r} {problem}")
        if self.bert_prob + self.gap_sentence_prob > 1.0 + 1e-9:
            raise ConfigError(
                f"--bert-prob {self.bert_prob} + --gap-sentence-prob {self.gap_sentence_prob} "
                "exceeds 1; the document mode takes the rest, so their sum must be <= 1")

    @property
    def document_prob(self) -> float:
        return max(0.0, 1.0 - self.bert_prob - self.gap_sentence_prob)

    def output_length(self, seq_length: int) -> int:
        """The static row length L for samples of `seq_length` tokens."""
        if isinstance(seq_length, bool) or not isinstance(seq_length, int) or seq_length < 4:
            raise ConfigError(f"--seq-length {seq_length!r}: blank infilling needs at least 4")
        spans = self.max_spans
        if spans is None:
            ratios = [r for p, r in ((self.bert_prob, self.bert_mask_ratio),
                                     (self.gap_sentence_prob, self.gap_sentence_ratio)) if p > 0]
            spans = max([1] + [math.ceil(r * seq_length / 2) for r in ratios])
        length = seq_length + 2 * spans
        return -(-length // self.length_multiple) * self.length_multiple

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BlankInfillingConfig":
        """From a namespace parsed with `add_arguments`' flags (absent flags keep defaults)."""
        values = {}
        for knob in fields(cls):
            value = getattr(args, _dest(knob), None)
            if value is not None:
                values[knob.name] = not value if knob.metadata["negated"] else value
        return cls(**values)


def _dest(knob) -> str:
    return knob.metadata["flag"][2:].replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser):
    """GLM's blank-infilling flags, with GLM's names and defaults, in their own group."""
    group = parser.add_argument_group("blank infilling (--objective blank-infilling)")
    for knob in fields(BlankInfillingConfig):
        flag, help = knob.metadata["flag"], knob.metadata["help"]
        if knob.metadata["negated"]:
            group.add_argument(flag, action="store_true", help=help)
        elif knob.type in ("bool", bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               default=knob.default, help=help)
        else:
            kind = int if "int" in str(knob.type) else float
            group.add_argument(flag, type=kind, default=knob.default, help=help)


def truncated_poisson_cdf(mean: float, max_length: int) -> np.ndarray:
    """Cumulative probabilities of lengths 1..max_length under Poisson(mean), renormalised."""
    k = np.arange(1, max_length + 1)
    log_pmf = k * math.log(mean) - mean - np.array([math.lgamma(i + 1) for i in k])
    pmf = np.exp(log_pmf - log_pmf.max())
    cdf = np.cumsum(pmf / pmf.sum())
    cdf[-1] = 1.0
    return cdf


def truncated_poisson_mean(mean: float, max_length: int) -> float:
    cdf = truncated_poisson_cdf(mean, max_length)
    pmf = np.diff(np.concatenate([[0.0], cdf]))
    return float((pmf * np.arange(1, max_length + 1)).sum())


def _runs(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate(([0], flags.view(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts


def _group_offsets(groups: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """For items sorted by group: the sum of the sizes of the earlier items of the same group."""
    if len(groups) == 0:
        return np.zeros(0, dtype=np.int64)
    total = np.cumsum(sizes)
    first = np.concatenate(([True], groups[1:] != groups[:-1]))
    base = (total - sizes)[first]
    return total - sizes - np.repeat(base, np.diff(np.append(np.flatnonzero(first), len(groups))))


class BlankInfillingCollator:
    """(samples, rng) -> batch; picklable, numpy only until the final torch.from_numpy."""

    def __init__(self, config: BlankInfillingConfig, special_ids, sentence_end_table,
                 seq_length: int):
        self.config = config
        self.special = SpecialTokenIds.coerce(special_ids)
        if config.prepend_cls and self.special.cls is None:
            raise ValueError("--prepend-cls needs the [CLS] token id; the tokenizer has none")
        self._boundary_ids = [t for t in (self.special.eod, self.special.pad, self.special.cls)
                              if t is not None]
        self.sentence_end = check_sentence_end_table(sentence_end_table, self.special)
        self.seq_length = seq_length
        self.length = config.output_length(seq_length)
        self.max_spans = (self.length - seq_length) // 2
        self.max_span_length = seq_length - 2  # block position ids stay < seq_length
        self._length_cdf = truncated_poisson_cdf(config.avg_block_length,
                                                 config.max_block_length)
        s = self.special
        self.mask_ids = {"token": s.mask,
                         "sentence": s.smask if config.task_mask else s.mask,
                         "document": s.gmask if config.task_mask else s.mask}

    def choose_mode(self, u: float) -> str:
        c = self.config
        if u < c.bert_prob:
            return "token"
        if u < c.bert_prob + c.gap_sentence_prob:
            return "sentence"
        return "document"

    def __call__(self, samples: Sequence[np.ndarray], rng: np.random.Generator) -> dict:
        # The extra token of a seq_length + 1 sample is only a causal label: not needed here.
        samples = [as_token_array(x, self.seq_length + 1, i, keep=self.seq_length)
                   for i, x in enumerate(check_samples(samples))]
        b, L, s = len(samples), self.length, self.special
        out = {"tokens": np.full((b, L), s.pad, dtype=np.int64),
               "labels": np.full((b, L), s.pad, dtype=np.int64),
               "loss_mask": np.zeros((b, L), dtype=np.float32),
               "position_ids": np.zeros((b, 2, L), dtype=np.int64),
               "sep": np.zeros(b, dtype=np.int64)}
        u_short, u_mode = rng.random(2)
        cut = None
        if u_short < self.config.short_seq_prob:
            hi = max(self.seq_length - 2, 1)
            cut = int(rng.integers(min(_SHORT_SEQ_MIN, hi), hi + 1))
        mode = self.choose_mode(u_mode)
        out["mode"] = np.full(b, BLANK_MODES.index(mode), dtype=np.int64)
        vocab = len(self.sentence_end)
        for row, x in enumerate(samples):
            x = x[:content_length(x, s.pad)]
            if len(x) and not 0 <= x.min() <= x.max() < vocab:
                raise ValueError(f"sample {row} holds token ids outside 0..{vocab - 1}, the "
                                 "range the sentence-end table covers; build the table over "
                                 "the whole vocabulary")
            if cut is not None:
                x = self._short_segment(x, cut, rng)
            if self.config.prepend_cls:
                x = self._with_cls(x)
            # Spans are drawn in the text after the leading [CLS], which stays in Part A.
            body = x[1:] if self.config.prepend_cls else x
            if mode == "token":
                starts, lengths = self._token_spans(body, rng)
                eop = True
            elif mode == "sentence":
                starts, lengths = self._sentence_spans(body, rng)
                eop = True
            else:
                starts, lengths, eop = self._document_span(body, rng)
            self._write_row(out, row, x, starts + (len(x) - len(body)), lengths, eop, mode, rng)
        return to_batch(out)

    # -- where documents, sentences and spans are ------------------------------------------

    def _boundaries(self, x: np.ndarray) -> np.ndarray:
        return np.isin(x, self._boundary_ids)

    def _with_cls(self, x: np.ndarray) -> np.ndarray:
        """[CLS] before the sample and before every document packed after an eod (GLM's
        BlockDataset), cut back to seq_length tokens."""
        eod = np.flatnonzero(x[:-1] == self.special.eod) + 1
        return np.insert(x, np.concatenate(([0], eod)), self.special.cls)[:self.seq_length]

    def _short_segment(self, x: np.ndarray, length: int, rng) -> np.ndarray:
        """A random sub-segment of about `length` tokens, starting at a sentence start and
        ending at a sentence end when that keeps at least half of it (GLM's split_samples)."""
        n = len(x)
        if length >= n:
            return x
        start = int(rng.integers(0, n - length))
        boundary = self._boundaries(x)
        ends_sentence = self.sentence_end[x] | boundary
        good_starts = np.flatnonzero(np.concatenate(([True], ~boundary[1:] & ends_sentence[:-1])))
        start = int(good_starts[np.searchsorted(good_starts, start, side="right") - 1])
        good_ends = np.flatnonzero(ends_sentence) + 1
        k = np.searchsorted(good_ends, start + length, side="right") - 1
        end = int(good_ends[k]) if k >= 0 else start
        if end - start < length // 2:
            end = start + length
        return x[start:end]

    def _token_spans(self, x: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        n, ratio = len(x), self.config.bert_mask_ratio
        draws = np.searchsorted(self._length_cdf, rng.random(self.max_spans), side="right") + 1
        draws = np.minimum(draws, self.max_span_length)
        target = int(ratio * n)
        doc_starts, doc_lengths = _runs(~self._boundaries(x))
        if target <= 0 or len(doc_starts) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        covered = np.cumsum(draws)
        count = min(int(np.searchsorted(covered, target, side="left")) + 1, self.max_spans)
        lengths, covered = draws[:count], covered[:count]

        # Documents shortest first; each takes the spans whose running total falls in its
        # share (ratio x its length, accumulated so that short documents' fractions add up),
        # the longest takes the rest (GLM's sample_span_in_document, which floors each share).
        by_length = np.argsort(doc_lengths, kind="stable")
        doc_starts, doc_lengths = doc_starts[by_length], doc_lengths[by_length]
        last = len(doc_lengths) - 1
        bounds = ratio * np.cumsum(doc_lengths).astype(np.float64)
        bounds[last] = np.inf
        doc = np.searchsorted(bounds, covered, side="left")
        # A span fits when its document holds it and the earlier ones, one token apart.
        sizes = lengths + 1
        fits = _group_offsets(doc, sizes) + lengths <= doc_lengths[doc]
        if not fits.all():  # move the misfits to the longest document; drop what still fails
            doc = np.where(fits, doc, last)
            regroup = np.argsort(doc, kind="stable")
            doc, lengths, sizes = doc[regroup], lengths[regroup], sizes[regroup]
            keep = _group_offsets(doc, sizes) + lengths <= doc_lengths[doc]
            doc, lengths, sizes = doc[keep], lengths[keep], sizes[keep]
        before = _group_offsets(doc, sizes)  # tokens taken by earlier spans (+ their gaps)

        # Within a document: spread the spare tokens over the gaps (GLM's sample_spans).
        used = np.bincount(doc, weights=sizes, minlength=len(doc_lengths)).astype(np.int64)
        spare = doc_lengths - (used - 1)
        places = rng.integers(0, spare[doc] + 1)
        places = places[np.lexsort((places, doc))]
        starts = doc_starts[doc] + places + before
        order = np.argsort(starts)
        return starts[order], lengths[order]

    def _sentences(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(starts, lengths) of the sentences: runs of document tokens cut after sentence ends;
        runs longer than max_span_length are cut into pieces of that length."""
        text = ~self._boundaries(x)
        ends = text & self.sentence_end[x]
        ends[-1:] |= text[-1:]
        ends[:-1] |= text[:-1] & ~text[1:]
        begins = text.copy()
        begins[1:] &= ~text[:-1] | ends[:-1]
        starts = np.flatnonzero(begins)
        lengths = np.flatnonzero(ends) + 1 - starts
        limit = self.max_span_length
        if len(lengths) and lengths.max() > limit:
            pieces = -(-lengths // limit)
            first = np.repeat(np.cumsum(pieces) - pieces, pieces)
            part = np.arange(pieces.sum()) - first
            sentence_end = np.repeat(starts + lengths, pieces)
            starts = np.repeat(starts, pieces) + part * limit
            lengths = np.minimum(starts + limit, sentence_end) - starts
        return starts, lengths

    def _sentence_spans(self, x: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
        starts, lengths = self._sentences(x)
        if len(starts) == 0:
            return starts, lengths
        order = rng.permutation(len(starts))
        covered = np.cumsum(lengths[order])
        target = int(self.config.gap_sentence_ratio * len(x))
        count = min(int(np.searchsorted(covered, target, side="left")) + 1, self.max_spans)
        chosen = np.sort(order[:count])
        return starts[chosen], lengths[chosen]

    def _document_span(self, x: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray, bool]:
        """One span of U[int(gpt_min_ratio * n), n - 2] tokens: the suffix (no eop) when the
        sample packs several documents or with probability gpt_infill_prob, else inside the
        document (with eop)."""
        n = len(x)
        u_length, u_suffix, u_place = rng.random(3)
        if n < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), True
        hi = max(n - 2, 1)
        lo = min(max(int(self.config.gpt_min_ratio * n), 1), hi)
        length = min(lo + int(u_length * (hi - lo + 1)), hi)
        boundary = self._boundaries(x)
        if boundary[:-1].any() or u_suffix < self.config.gpt_infill_prob:
            return np.array([n - length]), np.array([length]), False
        room = n - int(boundary[-1]) - length  # the document without a final eod
        start = min(int(u_place * (room + 1)), room)
        return np.array([start]), np.array([length]), True

    # -- the row layout ----------------------------------------------------------------------

    def _write_row(self, out: dict, row: int, x: np.ndarray, starts: np.ndarray,
                   lengths: np.ndarray, eop: bool, mode: str, rng):
        s, n, count = self.special, len(x), len(starts)
        starts, lengths = starts.astype(np.int64), lengths.astype(np.int64)
        # Part A: span interiors removed, span starts replaced by the mask token.
        depth = np.zeros(n + 1, dtype=np.int64)
        depth[starts + 1] += 1
        depth[starts + lengths] -= 1
        part_a = x.copy()
        part_a[starts] = self.mask_ids[mode]
        part_a = part_a[np.cumsum(depth[:n]) == 0]
        sep = len(part_a)
        mask_positions = starts - np.concatenate(([0], np.cumsum(lengths - 1)[:-1]))

        # Part B: per span [sop] + span (inputs), span + [eop] (targets).
        order = rng.permutation(count) if self.config.shuffle_blocks else np.arange(count)
        span_start, span_length = starts[order], lengths[order]
        block_length = span_length + int(eop)
        total = int(block_length.sum())
        span = np.repeat(np.arange(count), block_length)
        offset = np.arange(total) - np.repeat(np.cumsum(block_length) - block_length,
                                              block_length)
        source = span_start[span] + offset  # index in x of the target token
        labels_b = np.where(offset == span_length[span], s.eop, x[np.minimum(source, n - 1)])
        inputs_b = np.where(offset == 0, s.sop, x[source - 1])
        if mode == "token" and self.config.block_mask_prob > 0:
            hide = (offset > 0) & (rng.random(total) < self.config.block_mask_prob)
            inputs_b[hide] = s.dblock

        end = sep + total
        out["tokens"][row, :sep] = part_a
        out["tokens"][row, sep:end] = inputs_b
        out["labels"][row, :sep] = part_a
        out["labels"][row, sep:end] = labels_b
        out["loss_mask"][row, sep:end] = 1.0
        out["position_ids"][row, 0, :sep] = np.arange(sep)
        out["position_ids"][row, 0, sep:end] = mask_positions[order][span]
        out["position_ids"][row, 1, sep:end] = offset + 1 if self.config.block_position else 1
        out["sep"][row] = sep


def collate(samples: Sequence[np.ndarray], rng: np.random.Generator,
            config: BlankInfillingConfig, special_ids, sentence_end_table,
            seq_length: int) -> dict:
    """One-off form of BlankInfillingCollator(config, ...)(samples, rng)."""
    return BlankInfillingCollator(config, special_ids, sentence_end_table, seq_length)(
        samples, rng)
