"""GLM's blank-infilling collation (and the causal / prefix-LM ones): layout, statistics,
determinism, against random packed documents from a small vocabulary."""

import pickle

import numpy as np
import pytest
import torch

from glm_megatron.config import ConfigError
from glm_megatron.model.attention import glm_attention_mask
from glm_megatron.objectives import (BlankInfillingConfig, SpecialTokenIds, build_collator,
                                     is_sentence_end_piece, microbatch_rng, sentence_end_table,
                                     truncated_poisson_mean)

# Vocabulary: 0..79 plain tokens, 80..84 end a sentence, then the special tokens.
SPECIAL = SpecialTokenIds(mask=90, smask=91, gmask=92, sop=93, eop=94, dblock=95, pad=96, eod=97,
                          cls=98)
ENDS = np.zeros(100, dtype=bool)
ENDS[80:85] = True
MASKS = {SPECIAL.mask, SPECIAL.smask, SPECIAL.gmask}


def packed_samples(rng, count, length, doc_lengths=(5, 200), end_rate=0.06, extra=1):
    """`count` samples of length + extra tokens cut from one stream of documents joined by eod."""
    stream, need = [], count * (length + extra) + 1
    while len(stream) < need:
        n = int(rng.integers(*doc_lengths))
        words = rng.integers(0, 80, n)
        words[rng.random(n) < end_rate] = rng.integers(80, 85)
        stream.extend(words.tolist() + [SPECIAL.eod])
    stream = np.array(stream[:need])
    return [stream[i * (length + extra):(i + 1) * (length + extra)] for i in range(count)]


def collator(seq_length=128, **config):
    return build_collator("blank-infilling", BlankInfillingConfig(**config), SPECIAL, ENDS,
                          seq_length)


def decode_row(batch, row):
    """Check one row's layout and undo it: (the original text, its spans as (start, length,
    has_eop) in original coordinates, the Part-B input tokens per span)."""
    tokens, labels = batch["tokens"][row].numpy(), batch["labels"][row].numpy()
    loss = batch["loss_mask"][row].numpy()
    positions, blocks = batch["position_ids"][row].numpy()
    sep = int(batch["sep"][row])
    part_b = np.flatnonzero(loss)
    end = sep + len(part_b)
    # The loss mask is exactly Part B, contiguous from sep; the rest is padding.
    assert part_b.tolist() == list(range(sep, end))
    assert (tokens[end:] == SPECIAL.pad).all() and (labels[end:] == SPECIAL.pad).all()
    assert (positions[end:] == 0).all() and (blocks[end:] == 0).all()
    # Part A: positions 0.., block positions 0, labels = inputs.
    assert (positions[:sep] == np.arange(sep)).all() and (blocks[:sep] == 0).all()
    assert (labels[:sep] == tokens[:sep]).all()
    part_a = tokens[:sep]
    starts = [i for i in range(sep, end) if tokens[i] == SPECIAL.sop]
    assert not part_b.size or starts[0] == sep
    segments = []
    for first, stop in zip(starts, starts[1:] + [end]):
        target = labels[first:stop]
        has_eop = target[-1] == SPECIAL.eop
        span = target[:-1] if has_eop else target
        assert (positions[first:stop] == positions[first]).all()
        slot = int(positions[first])
        assert part_a[slot] in MASKS
        segments.append((slot, span, has_eop, tokens[first:stop], blocks[first:stop]))
    assert len({s[0] for s in segments}) == len(segments)
    text, spans, last = [], [], 0
    for slot, span, has_eop, inputs, block in sorted(segments, key=lambda s: s[0]):
        text.extend(part_a[last:slot])
        spans.append((len(text), len(span), has_eop))
        text.extend(span)
        last = slot + 1
    text.extend(part_a[last:])
    return np.array(text, dtype=np.int64), spans, segments


def check_inputs(segments, block_position=True, dblock_allowed=False):
    for _, span, has_eop, inputs, block in segments:
        expected = np.concatenate(([SPECIAL.sop], span if has_eop else span[:-1]))
        hidden = inputs == SPECIAL.dblock
        assert dblock_allowed or not hidden.any()
        assert not hidden[0]
        assert (inputs[~hidden] == expected[~hidden]).all()
        want = np.arange(1, len(inputs) + 1) if block_position else np.ones(len(inputs))
        assert (block == want).all()


def original(sample, seq_length):
    x = np.asarray(sample)[:seq_length]
    real = np.flatnonzero(x != SPECIAL.pad)
    return x[:real[-1] + 1] if len(real) else x[:0]


CONFIGS = {
    "token": dict(bert_prob=1.0),
    "token-dblock-noshuffle": dict(bert_prob=1.0, block_mask_prob=0.3, shuffle_blocks=False),
    "sentence": dict(bert_prob=0.0, gap_sentence_prob=1.0, task_mask=True),
    "document": dict(bert_prob=0.0, gap_sentence_prob=0.0, task_mask=True),
    "document-infill": dict(bert_prob=0.0, gpt_infill_prob=0.0, gpt_min_ratio=0.25),
    "mixed-no-block-position": dict(bert_prob=0.4, gap_sentence_prob=0.3, block_position=False),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("doc_lengths", [(5, 200), (1, 12), (300, 900)])
def test_layout_reconstructs_the_sample(name, doc_lengths):
    config = CONFIGS[name]
    seq = 128
    c = collator(seq, **config)
    data_rng = np.random.default_rng([list(CONFIGS).index(name), doc_lengths[0]])
    for it in range(30):
        if name == "document-infill":  # single documents, with or without a final eod
            samples = [np.concatenate((data_rng.integers(0, 85, seq - 1 + k % 2),
                                       np.full(1 - k % 2, SPECIAL.eod))) for k in range(4)]
        else:
            samples = packed_samples(data_rng, 4, seq, doc_lengths)
        batch = c(samples, microbatch_rng(7, it))
        assert batch["tokens"].shape == (4, c.length) and batch["tokens"].dtype == torch.int64
        assert batch["labels"].dtype == torch.int64 and batch["sep"].dtype == torch.int64
        assert batch["loss_mask"].dtype == torch.float32
        assert batch["position_ids"].shape == (4, 2, c.length)
        for row, sample in enumerate(samples):
            text, spans, segments = decode_row(batch, row)
            assert (text == original(sample, seq)).all()
            assert len(spans) <= c.max_spans
            check_inputs(segments, config.get("block_position", True),
                         dblock_allowed=config.get("block_mask_prob", 0) > 0)
            used = int(batch["sep"][row]) + int(batch["loss_mask"][row].sum())
            assert used == len(text) + 2 * len(spans) - sum(not e for _, _, e in spans)
            assert used <= c.length
            assert int(batch["position_ids"][row].max()) < seq  # fits max_position_embeddings
            if config.get("shuffle_blocks") is False:
                slots = [s[0] for s in segments]
                assert slots == sorted(slots)


@pytest.mark.parametrize("mode", ["token", "sentence", "document"])
def test_prepend_cls_starts_every_sample_and_document(mode):
    """GLM's BlockDataset: [CLS] first, and again before each document packed after an eod;
    the first [CLS] stays in Part A, token and sentence spans never cover one, and the row
    holds seq_length tokens."""
    seq = 96
    c = collator(seq, prepend_cls=True, task_mask=True,
                 **{k: v for k, v in CONFIGS[mode].items() if k != "task_mask"})
    data_rng = np.random.default_rng(3)
    for it in range(10):
        samples = packed_samples(data_rng, 4, seq, (5, 60))
        batch = c(samples, microbatch_rng(5, it))
        for row, sample in enumerate(samples):
            text, spans, segments = decode_row(batch, row)
            body = original(sample, seq)
            after_eod = np.flatnonzero(body[:-1] == SPECIAL.eod) + 1
            expected = np.insert(body, np.concatenate(([0], after_eod)), SPECIAL.cls)[:seq]
            assert (text == expected).all()
            for start, length, _ in spans:
                # A document-mode suffix takes the later documents whole, [CLS] included, as
                # GLM's does; the first [CLS] stays in Part A in every mode.
                assert start > 0
                assert mode == "document" or SPECIAL.cls not in text[start:start + length]


def test_prepend_cls_keeps_document_infilling_of_single_documents():
    """The leading [CLS] is not a document boundary: a single document can still be infilled
    inside (with eop) rather than always as the suffix."""
    seq = 64
    c = collator(seq, prepend_cls=True, **CONFIGS["document-infill"])
    rng = np.random.default_rng(4)
    samples = [rng.integers(0, 85, seq) for _ in range(8)]
    batch = c(samples, microbatch_rng(2, 0))
    eops = [has_eop for row in range(8) for _, _, has_eop in decode_row(batch, row)[1]]
    assert all(eops)


def test_prepend_cls_needs_the_token():
    no_cls = SpecialTokenIds(**{k: v for k, v in SPECIAL.as_dict().items() if k != "cls"})
    with pytest.raises(ValueError, match="--prepend-cls"):
        build_collator("blank-infilling", BlankInfillingConfig(prepend_cls=True), no_cls, ENDS,
                       64)


def test_published_recipes_are_flag_defaults():
    from glm_megatron.arguments import parse_args
    args = parse_args(["--model-preset", "glm-10b"])
    assert (args.objective, args.task_mask, args.bert_prob, args.gap_sentence_prob,
            args.gpt_min_ratio, args.block_mask_prob, args.short_seq_prob, args.prepend_cls,
            args.seq_length) == ("blank-infilling", True, 0.5, 0.3, 0.25, 0.1, 0.02, True, 512)
    args = parse_args(["--model-preset", "glm-large"])
    assert (args.bert_prob, args.task_mask, args.prepend_cls) == (1.0, False, True)
    args = parse_args(["--model-preset", "glm-10b", "--no-task-mask", "--bert-prob", "0.2",
                       "--no-prepend-cls", "--objective", "causal"])
    assert (args.objective, args.task_mask, args.bert_prob, args.prepend_cls) == (
        "causal", False, 0.2, False)
    args = parse_args(["--model-preset", "glm-tiny"])
    assert (args.objective, args.prepend_cls, args.bert_prob) == ("causal", False, 0.5)


def test_token_spans_are_inside_documents_and_apart():
    c = collator(256, bert_prob=1.0)
    data_rng = np.random.default_rng(1)
    for it in range(40):
        samples = packed_samples(data_rng, 4, 256, (3, 60))
        batch = c(samples, microbatch_rng(1, it))
        for row, sample in enumerate(samples):
            text, spans, _ = decode_row(batch, row)
            assert all(e for _, _, e in spans)
            assert (batch["tokens"][row, :batch["sep"][row]] == SPECIAL.mask).sum() == len(spans)
            for (s0, l0, _), (s1, _, _) in zip(spans, spans[1:]):
                assert s1 - (s0 + l0) >= 1
            for s, length, _ in spans:
                assert 1 <= length <= 40
                assert not (text[s:s + length] == SPECIAL.eod).any()


def test_attention_mask_hides_part_b_from_part_a():
    c = collator(64, bert_prob=0.5, gap_sentence_prob=0.3)
    data_rng = np.random.default_rng(2)
    for it in range(5):
        batch = c(packed_samples(data_rng, 3, 64), microbatch_rng(0, it))
        L = batch["tokens"].shape[1]
        mask = glm_attention_mask(batch["sep"], L, torch.device("cpu"))
        assert mask.shape == (3, 1, L, L) and mask.dtype == torch.bool
        rows = torch.arange(L)
        for row in range(3):
            sep = int(batch["sep"][row])
            m = mask[row, 0]
            assert not m[:sep, sep:].any()  # nothing after sep is visible to Part A
            assert m[:sep, :sep].all()  # Part A is bidirectional
            # Part B: all of Part A, then causal.
            expected = (rows[None, :] < sep) | (rows[None, :] <= rows[:, None])
            assert torch.equal(m[sep:], expected[sep:])


def test_token_mode_statistics():
    seq = 512
    c = collator(seq, bert_prob=1.0)
    data_rng = np.random.default_rng(3)
    masked = total = 0
    lengths = []
    for it in range(50):
        samples = packed_samples(data_rng, 8, seq, (200, 2000))
        batch = c(samples, microbatch_rng(3, it))
        for row, sample in enumerate(samples):
            text, spans, _ = decode_row(batch, row)
            lengths.extend(length for _, length, _ in spans)
            masked += sum(length for _, length, _ in spans)
            total += len(text)
    ratio = masked / total
    assert abs(ratio - 0.15) <= 0.015, ratio
    expected = truncated_poisson_mean(3.0, 40)  # Poisson(3) on 1..40: 3 / (1 - e^-3) = 3.157
    assert abs(expected - 3 / (1 - np.exp(-3))) < 1e-6
    assert abs(np.mean(lengths) - expected) <= 0.1 * expected, np.mean(lengths)
    assert min(lengths) >= 1 and max(lengths) <= 40


def test_sentence_mode_masks_whole_sentences():
    seq = 256
    c = collator(seq, bert_prob=0.0, gap_sentence_prob=1.0, task_mask=True)
    data_rng = np.random.default_rng(4)
    masked = total = 0
    for it in range(30):
        samples = packed_samples(data_rng, 4, seq, (20, 400), end_rate=0.1)
        batch = c(samples, microbatch_rng(4, it))
        for row in range(4):
            sep = int(batch["sep"][row])
            assert set(batch["tokens"][row, :sep].tolist()) & MASKS <= {SPECIAL.smask}
            text, spans, _ = decode_row(batch, row)
            is_end, boundary = ENDS[text], text == SPECIAL.eod
            for s, length, has_eop in spans:
                assert has_eop and not boundary[s:s + length].any()
                e = s + length
                assert s == 0 or is_end[s - 1] or boundary[s - 1]  # starts a sentence
                assert e == len(text) or is_end[e - 1] or boundary[e]  # ends one
                assert not is_end[s:e - 1].any()  # one sentence, not more
            covered = sum(length for _, length, _ in spans)
            assert covered >= int(0.15 * len(text)) or len(spans) == c.max_spans
            masked += covered
            total += len(text)
    assert 0.15 <= masked / total <= 0.30


def test_document_mode():
    seq = 128
    data_rng = np.random.default_rng(5)
    # Several documents in a sample: always the suffix, without eop.
    c = collator(seq, bert_prob=0.0, gpt_infill_prob=0.0, task_mask=True)
    for it in range(20):
        samples = packed_samples(data_rng, 4, seq, (10, 60))
        batch = c(samples, microbatch_rng(5, it))
        for row, sample in enumerate(samples):
            text, spans, segments = decode_row(batch, row)
            (start, length, has_eop), = spans
            assert not has_eop and start + length == len(text) == seq
            assert int(0.5 * seq) <= length <= seq - 2
            assert batch["tokens"][row, batch["sep"][row] - 1] == SPECIAL.gmask
            assert int(batch["sep"][row]) == seq - length + 1
    # One document: inside it with eop at gpt_infill_prob 0, the suffix at 1.
    single = [np.concatenate((data_rng.integers(0, 85, seq - 1), [SPECIAL.eod]))
              for _ in range(4)]
    suffixes = []
    for infill_prob in (0.0, 1.0):
        c = collator(seq, bert_prob=0.0, gpt_infill_prob=infill_prob, gpt_min_ratio=0.25)
        for it in range(10):
            batch = c(single, microbatch_rng(6, it))
            for row in range(4):
                _, ((start, length, has_eop),), _ = decode_row(batch, row)
                assert int(0.25 * seq) <= length <= seq - 2
                suffixes.append(not has_eop)
                if has_eop:
                    assert start + length <= seq - 1  # the final eod stays in Part A
                else:
                    assert start + length == seq
    assert not any(suffixes[:40]) and all(suffixes[40:])


def test_mode_frequencies_follow_the_flags():
    c = collator(32, bert_prob=0.5, gap_sentence_prob=0.3, task_mask=True)
    data_rng = np.random.default_rng(6)
    samples = packed_samples(data_rng, 2, 32, (10, 40), end_rate=0.2)
    counts = {SPECIAL.mask: 0, SPECIAL.smask: 0, SPECIAL.gmask: 0}
    n = 1500
    for it in range(n):
        batch = c(samples, microbatch_rng(11, it))
        used = set(batch["tokens"].flatten().tolist()) & MASKS
        assert len(used) == 1  # one mode per micro-batch
        counts[used.pop()] += 1
    for token, p in ((SPECIAL.mask, 0.5), (SPECIAL.smask, 0.3), (SPECIAL.gmask, 0.2)):
        assert abs(counts[token] / n - p) < 0.05, counts


def test_short_seq_prob_cuts_sub_segments():
    seq = 256
    c = collator(seq, bert_prob=0.5, short_seq_prob=1.0)
    data_rng = np.random.default_rng(7)
    for it in range(10):
        samples = packed_samples(data_rng, 4, seq, (50, 300))
        batch = c(samples, microbatch_rng(8, it))
        lengths = set()
        for row, sample in enumerate(samples):
            text, _, _ = decode_row(batch, row)
            x = original(sample, seq).tolist()
            assert len(text) <= seq - 2
            lengths.add(len(text))
            k = len(text)
            assert any(x[i:i + k] == text.tolist() for i in range(len(x) - k + 1))


def test_block_mask_prob_rate():
    c = collator(256, bert_prob=1.0, block_mask_prob=0.25)
    data_rng = np.random.default_rng(9)
    hidden = total = 0
    for it in range(20):
        batch = c(packed_samples(data_rng, 4, 256, (100, 500)), microbatch_rng(9, it))
        for row in range(4):
            _, _, segments = decode_row(batch, row)
            for *_, inputs, _ in segments:
                hidden += (inputs[1:] == SPECIAL.dblock).sum()
                total += len(inputs) - 1
    assert abs(hidden / total - 0.25) < 0.03


def test_static_length_and_span_cap():
    config = BlankInfillingConfig()
    assert config.output_length(512) == 512 + 2 * 40  # ceil(0.15 * 512 / 2) = 39, rounded to 8
    assert BlankInfillingConfig(bert_prob=0.0).output_length(512) == 520  # one span
    assert BlankInfillingConfig(max_spans=5, length_multiple=1).output_length(100) == 110
    # Every token ends a sentence: many one-token sentences, capped at max_spans.
    c = collator(64, bert_prob=0.0, gap_sentence_prob=1.0, max_spans=3, length_multiple=1)
    assert c.length == 70
    sample = np.full(65, 81)
    batch = c([sample, sample[:10]], microbatch_rng(0, 0))
    for row, n in ((0, 64), (1, 10)):
        text, spans, _ = decode_row(batch, row)
        assert len(spans) == (3 if n == 64 else 1) and len(text) == n
    # No sentence end at all: one long "sentence", cut so block ids stay below seq_length.
    c = collator(64, bert_prob=0.0, gap_sentence_prob=1.0, gap_sentence_ratio=0.99)
    batch = c([np.zeros(64, dtype=np.int64)], microbatch_rng(0, 0))
    text, spans, _ = decode_row(batch, 0)
    assert (text == 0).all() and len(text) == 64 and max(s[1] for s in spans) <= 62
    assert int(batch["position_ids"].max()) < 64


def test_degenerate_samples():
    c = collator(32, bert_prob=0.4, gap_sentence_prob=0.3)
    cases = [np.full(33, SPECIAL.eod), np.array([5]), np.array([], dtype=np.int64),
             np.concatenate((np.arange(10), np.full(23, SPECIAL.pad))), np.array([5, 6])]
    for it in range(30):
        batch = c(cases, microbatch_rng(0, it))
        for row, sample in enumerate(cases):
            text, _, _ = decode_row(batch, row)
            assert (text == original(sample, 32)).all()
    with pytest.raises(ValueError, match="at most 33"):
        c([np.zeros(34, dtype=np.int64)], microbatch_rng(0, 0))


def test_determinism():
    c = collator(128, bert_prob=0.4, gap_sentence_prob=0.3, block_mask_prob=0.1,
                 short_seq_prob=0.2)
    samples = packed_samples(np.random.default_rng(10), 4, 128)

    def run(*coords):
        return c(samples, microbatch_rng(*coords))

    def same(a, b):
        return all(torch.equal(a[k], b[k]) for k in a)

    first = run(1234, 5)
    assert same(first, run(1234, 5))
    assert same(first, pickle.loads(pickle.dumps(c))(samples, microbatch_rng(1234, 5)))
    for other in ((1234, 6), (1234, 5, 1), (1235, 5)):
        assert not same(first, run(*other))
    with pytest.raises(ValueError, match="microbatch"):
        microbatch_rng(1, -1)


def test_runs_in_dataloader_workers():
    c = collator(64)
    samples = packed_samples(np.random.default_rng(12), 8, 64)

    class Batches(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return c(samples[4 * i:4 * i + 4], microbatch_rng(0, i))

    loader = torch.utils.data.DataLoader(Batches(), batch_size=None, num_workers=1)
    for i, batch in enumerate(loader):
        expected = c(samples[4 * i:4 * i + 4], microbatch_rng(0, i))
        assert all(torch.equal(batch[k], expected[k]) for k in expected)


def test_config_errors_name_the_flag():
    for kwargs, flag in (({"bert_prob": 1.5}, "--bert-prob"),
                         ({"gap_sentence_prob": -0.1}, "--gap-sentence-prob"),
                         ({"bert_prob": 0.7, "gap_sentence_prob": 0.5}, "--gap-sentence-prob"),
                         ({"gpt_infill_prob": 2}, "--gpt-infill-prob"),
                         ({"block_mask_prob": 1.1}, "--block-mask-prob"),
                         ({"short_seq_prob": -1}, "--short-seq-prob"),
                         ({"bert_mask_ratio": 0.0}, "--bert-mask-ratio"),
                         ({"avg_block_length": 0}, "--avg-block-length"),
                         ({"max_spans": 0}, "--max-spans")):
        with pytest.raises(ConfigError, match=flag):
            BlankInfillingConfig(**kwargs)
    with pytest.raises(ValueError, match="--objective"):
        build_collator("mlm", None, SPECIAL, ENDS, 64)


def test_config_from_flags():
    import argparse
    from glm_megatron.objectives import add_arguments
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = BlankInfillingConfig.from_args(parser.parse_args(
        ["--bert-prob", "0.5", "--gap-sentence-prob", "0.3", "--no-shuffle-block",
         "--no-block-position", "--task-mask"]))
    assert (config.bert_prob, config.gap_sentence_prob) == (0.5, 0.3)
    assert not config.shuffle_blocks and not config.block_position and config.task_mask
    assert BlankInfillingConfig.from_args(parser.parse_args([])) == BlankInfillingConfig()


def test_sentence_end_table():
    pieces = ["hello", ".", "▁end.", "?", "!\"", "etc", "e.g", ";", "▁:", "\n", "<0x0A>",
              "。", "？」", "！", "foo▁", "<0x41>", "</s>", "a)", "x\n▁▁"]
    expect = [False, True, True, True, True, False, False, True, True, True, True,
              True, True, True, False, False, False, False, True]
    assert [is_sentence_end_piece(p) for p in pieces] == expect
    table = sentence_end_table(pieces, vocab_size=30)
    assert table.dtype == bool and table.shape == (30,)
    assert table[:len(pieces)].tolist() == expect and not table[len(pieces):].any()


def test_causal_collation():
    c = build_collator("causal", None, SPECIAL, None, 16)
    samples = [np.arange(17), np.concatenate((np.arange(10), np.full(7, SPECIAL.pad)))]
    batch = c(samples, microbatch_rng(0, 0))
    assert set(batch) == {"tokens", "labels", "loss_mask", "position_ids"}
    assert batch["tokens"][0].tolist() == list(range(16))
    assert batch["labels"][0].tolist() == list(range(1, 17))
    assert batch["position_ids"].shape == (2, 16)
    assert batch["position_ids"][1].tolist() == list(range(16))
    assert batch["loss_mask"][0].tolist() == [1.0] * 16
    assert batch["loss_mask"][1].tolist() == [1.0] * 9 + [0.0] * 7


def test_prefix_lm_collation():
    seq = 32
    c = build_collator("prefix-lm", None, SPECIAL, None, seq)
    data_rng = np.random.default_rng(13)
    prefixes = set()
    for it in range(50):
        samples = [data_rng.integers(0, 85, seq + 1) for _ in range(3)]
        batch = c(samples, microbatch_rng(2, it))
        assert batch["tokens"].shape == (3, seq) and batch["position_ids"].shape == (3, 2, seq)
        for row, x in enumerate(samples):
            sep = int(batch["sep"][row])
            p = sep - 1
            prefixes.add(p)
            assert 1 <= p <= seq - 2
            tokens, labels = batch["tokens"][row].numpy(), batch["labels"][row].numpy()
            positions, blocks = batch["position_ids"][row].numpy()
            assert (tokens[:p] == x[:p]).all() and tokens[p] == SPECIAL.gmask
            assert tokens[p + 1] == SPECIAL.sop and (tokens[p + 2:] == x[p:seq - 2]).all()
            assert (labels[p + 1:] == x[p:seq - 1]).all()  # aligned: sop predicts x[p]
            assert batch["loss_mask"][row].tolist() == [0.0] * sep + [1.0] * (seq - sep)
            assert (positions[:sep] == np.arange(sep)).all() and (positions[sep:] == p).all()
            assert (blocks[:sep] == 0).all() and (blocks[sep:] == np.arange(1, seq - p)).all()
    assert min(prefixes) < 5 and max(prefixes) > seq - 6
    short = c([np.array([3]), np.array([4, 5])], microbatch_rng(0, 0))
    assert short["tokens"][0, :2].tolist() == [3, SPECIAL.gmask]
    assert short["loss_mask"][0].sum() == 0 and short["loss_mask"][1].sum() == 1


def test_model_consumes_the_batch(ctx):
    from glm_megatron.model.builder import build_model
    from glm_megatron.training.losses import language_model_loss
    from glm_testing import tiny_config
    model = build_model(tiny_config("glm-tiny", block_position_encoding=True), ctx,
                        seed=3).eval()
    seq = 96
    c = collator(seq, bert_prob=0.4, gap_sentence_prob=0.3)
    batch = c(packed_samples(np.random.default_rng(14), 2, seq), microbatch_rng(0, 0))
    batch = {k: v.to(ctx.device) for k, v in batch.items()}
    assert c.length <= model.config.max_position_embeddings
    with torch.no_grad():
        loss, _ = language_model_loss(model(batch), batch)
        logits = model.logits(batch["tokens"], batch["position_ids"], batch["sep"])
        changed = batch["tokens"].clone()
        sep = int(batch["sep"][0])
        changed[0, sep:] = (changed[0, sep:] + 1) % 90
        after = model.logits(changed, batch["position_ids"], batch["sep"])
    assert torch.isfinite(loss)
    torch.testing.assert_close(logits[:sep, 0], after[:sep, 0], rtol=0, atol=0)


def test_ids_outside_the_table_are_reported():
    c = collator(32)
    with pytest.raises(ValueError, match="sentence-end table"):
        c([np.full(32, 150)], microbatch_rng(0, 0))


@pytest.mark.parametrize("probs,mode", [(dict(bert_prob=1.0), 0),
                                        (dict(bert_prob=0.0, gap_sentence_prob=1.0), 1),
                                        (dict(bert_prob=0.0, gap_sentence_prob=0.0), 2)])
def test_batches_name_their_span_kind(probs, mode):
    c = collator(96, **probs)
    batch = c(packed_samples(np.random.default_rng(3), 3, 96), microbatch_rng(0, 0))
    assert batch["mode"].tolist() == [mode] * 3


def test_loss_reports_each_span_kind():
    """The LM loss is the token mean; its report splits summed losses and counts by kind."""
    from glm_megatron.training.losses import language_model_loss, mode_report_keys
    token_losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    batch = {"loss_mask": torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]),
             "mode": torch.tensor([0, 2, 0])}
    loss, report = language_model_loss(token_losses, batch)
    assert loss.item() == pytest.approx((1 + 2 + 5 + 6 + 7) / 5)
    assert sorted(report) == sorted(mode_report_keys())
    assert (report["token loss sum"], report["token tokens"]) == (10.0, 3.0)
    assert (report["document loss sum"], report["document tokens"]) == (11.0, 2.0)
    assert (report["sentence loss sum"], report["sentence tokens"]) == (0.0, 0.0)
