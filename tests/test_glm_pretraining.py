"""GLM's objectives inside the training pipeline: the data loader's determinism, resume and
DP-size invariance, sentence-aligned samples, every layout matching the single process, a
model that learns to fill blanks, and bad input."""

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece as spm
import torch

from cli import QUICK, ROOT, run_pretrain
from glm_testing import TEST_DEVICE
from glm_megatron.convert.checkpoint import CheckpointReader
from glm_megatron.data.builtin import ensure_builtin_data
from glm_megatron.data.builtin_corpus import iter_builtin_documents
from glm_megatron.data.datasets import build_datasets
from glm_megatron.data.sampler import build_data_loader
from glm_megatron.data.tokenizer import GLMTokenizer
from glm_megatron.generation import fill_blanks, generate_spans, load_model
from glm_megatron.training.losses import language_model_loss
from glm_megatron.objectives import (BlankInfillingConfig, SpecialTokenIds, build_collator,
                                     microbatch_rng, sentence_end_table)

SEQ = 64
# Every mode and every random knob on, so that the loader's generator is exercised throughout.
MIXTURE = BlankInfillingConfig(bert_prob=0.4, gap_sentence_prob=0.3, short_seq_prob=0.2,
                               block_mask_prob=0.1)


@pytest.fixture(scope="module")
def data():
    prefix, tokenizer_path = ensure_builtin_data()
    tokenizer = GLMTokenizer(tokenizer_path)
    return prefix, tokenizer, sentence_end_table(tokenizer.pieces(), tokenizer.vocab_size)


def _batches(data, seed, steps, global_batch, micro, dp_rank=0, dp_size=1, consumed=0,
             num_workers=0, objective="blank-infilling"):
    """Per step, this rank's micro-batches, as pretrain_glm.py's loader makes them."""
    prefix, tokenizer, table = data
    samples = build_datasets([prefix], "969,30,1", SEQ, seed,
                             (consumed + steps * global_batch, 0, 0), tokenizer,
                             sentence_end=table)[0]
    collator = build_collator(objective, MIXTURE, SpecialTokenIds.from_tokenizer(tokenizer),
                              table, SEQ)
    loader = iter(build_data_loader(samples, collator, consumed, micro, dp_rank, dp_size,
                                    seed=seed, num_workers=num_workers))
    per_step = global_batch // (micro * dp_size)
    return [[next(loader) for _ in range(per_step)] for _ in range(steps)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_depend_on_the_seed_alone_and_resume_exactly(data):
    full = _batches(data, 1234, 4, 8, 2)
    again = _batches(data, 1234, 4, 8, 2, num_workers=2)  # collated in worker processes
    assert all(_same(x, y) for step_x, step_y in zip(full, again) for x, y in zip(step_x, step_y))
    assert not _same(full[0][0], _batches(data, 99, 1, 8, 2)[0][0])
    resumed = _batches(data, 1234, 2, 8, 2, consumed=16)
    assert all(_same(x, y) for step_x, step_y in zip(full[2:], resumed)
               for x, y in zip(step_x, step_y))


def test_every_dp_size_sees_the_same_global_batch(data):
    """DP rank r's micro-batch j of a step is DP=1's micro-batch j * dp + r: the same samples
    with the same masks, so a layout changes nothing about what is trained on."""
    full = _batches(data, 1234, 2, 8, 2)
    for dp in (2, 4):
        ranks = [_batches(data, 1234, 2, 8, 2, dp_rank=r, dp_size=dp) for r in range(dp)]
        for step in range(2):
            for r in range(dp):
                for j, batch in enumerate(ranks[r][step]):
                    assert _same(batch, full[step][j * dp + r])


def test_samples_start_at_sentence_starts(data):
    """A sample that starts inside a sentence drops the fragment up to the first sentence end
    (within its first half); one whose previous token ends a sentence or document is kept."""
    prefix, tokenizer, table = data
    aligned, plain = (build_datasets([prefix], "969,30,1", SEQ, 1, (200, 0, 0), tokenizer,
                                     sentence_end=t)[0] for t in (table, None))
    gpt = plain.dataset
    plain[0]  # megatron-core loads its indices on first access
    stream = np.concatenate([gpt.dataset[int(d)] for d in gpt.document_index])
    kept = 0
    for i in range(200):
        raw, sample = plain[i], aligned[i]
        start = int(gpt.shuffle_index[i]) * SEQ
        assert raw.tolist() == stream[start:start + SEQ + 1].tolist()
        previous = stream[start - 1] if start else tokenizer.eod  # eod ends every document
        head = raw[:len(raw) // 2]
        ends = np.flatnonzero(table[head] | (head == tokenizer.eod))
        drop = 0 if previous == tokenizer.eod or table[previous] or not len(ends) else \
            int(ends[0]) + 1
        assert len(sample) == SEQ + 1
        assert sample[:len(raw) - drop].tolist() == raw[drop:].tolist()
        assert (sample[len(raw) - drop:] == tokenizer.pad).all()
        kept += drop == 0
    assert 0 < kept < 150  # some samples begin at a sentence start, most inside one


def _losses(stdout: str) -> list[float]:
    return [float(m) for m in re.findall(r"\| lm loss: (\S+) \|", stdout)]


@pytest.mark.slow
def test_blank_infilling_layouts_match_the_single_process(tmp_path):
    """ChatGLM3's architecture with block positions on the second rotary slice: TP=2, DP=2 and
    PP=2 train on exactly the single process's batches and reach the same losses."""
    flags = QUICK + ["--objective", "blank-infilling", "--bert-prob", "0.4",
                     "--gap-sentence-prob", "0.3", "--train-iters", "3", "--hidden-dropout",
                     "0", "--attention-dropout", "0",
                     # One padded vocabulary (8192) for TP 1 and 2, hence one initial model.
                     "--make-vocab-size-divisible-by", "256"]
    runs = {}
    for name, extra, nproc in (("single", [], 1),
                               ("tp2", ["--tensor-model-parallel-size", "2"], 2),
                               ("dp2", [], 2),
                               ("pp2", ["--pipeline-model-parallel-size", "2"], 2)):
        result = run_pretrain(flags + extra + ["--save", str(tmp_path / name)], nproc=nproc)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[name] = _losses(result.stdout)
    assert len(runs["single"]) == 3
    for name in ("tp2", "dp2", "pp2"):
        assert runs[name] == pytest.approx(runs["single"], rel=2e-5), name


def test_prefix_lm_trains(tmp_path):
    result = run_pretrain(QUICK + ["--model-preset", "chatglm-6b-tiny", "--objective",
                                   "prefix-lm", "--train-iters", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    losses = _losses(result.stdout)
    # A cross entropy over Part B's tokens: from an untrained model, close to ln(vocabulary).
    assert len(losses) == 2 and abs(losses[0] - np.log(8064)) < 0.3, losses


def _validation_losses(stdout: str) -> list[float]:
    return [float(m) for m in re.findall(r"validation loss at iteration \d+ \| lm loss value: "
                                         r"(\S+)", stdout)]


def _held_out_passages(count: int) -> list[np.ndarray]:
    """Validation-split samples of the built-in corpus: text the training run never saw."""
    prefix, tokenizer_path = ensure_builtin_data()
    valid = build_datasets([prefix], "969,30,1", SEQ, 1234, (0, 4 * count, 0),
                           GLMTokenizer(tokenizer_path))[1]
    return [valid[3 * i][:SEQ - 4] for i in range(count)]


def _span_loss_and_unigram_baseline(model, batch, tokenizer) -> tuple[float, float]:
    """On the span tokens of `batch` (its targets but <eop>): the model's mean loss, and that
    of a context-blind model, each token's unigram frequency in the whole built-in corpus
    (held-out text included, which only flatters the baseline)."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    corpus = IndexedDataset(ensure_builtin_data()[0])
    counts = np.bincount(np.concatenate([corpus[i] for i in range(len(corpus))]),
                         minlength=tokenizer.vocab_size) + 1.0  # add-one smoothing
    log_unigram = torch.tensor(np.log(counts / counts.sum()))
    targets = (batch["loss_mask"] > 0) & (batch["labels"] != tokenizer.eop)
    with torch.no_grad():
        token_losses = model(batch)
    labels = batch["labels"][targets].cpu()
    return (float(token_losses[targets].mean()), float(-log_unigram[labels].mean()))


@pytest.mark.slow
def test_blank_infilling_learns_and_fills_blanks(tmp_path):
    """A small GLM trained a few hundred iterations on the built-in corpus, in bf16 with fp32
    master weights (as users train; this CPU's bf16 matrix units make it the faster run too):
    the validation loss (total, and of token spans alone) falls far below its start, the
    spans' loss on held-out text is well below a context-blind (unigram) model's on the same
    targets, the model reads Part A to fill a blank (its loss on the spans rises when Part A is
    shuffled), and it fills blanks in held-out text (printed)."""
    save = str(tmp_path / "checkpoints")
    result = run_pretrain(
        ["--model-preset", "chatglm3-tiny", "--num-layers", "4", "--hidden-size", "128",
         "--ffn-hidden-size", "384", "--hidden-dropout", "0", "--attention-dropout", "0",
         "--objective", "blank-infilling", "--bert-prob", "1", "--bert-mask-ratio", "0.3",
         "--seq-length", str(SEQ), "--micro-batch-size", "16", "--global-batch-size", "32",
         "--train-iters", "400", "--lr", "3e-3", "--lr-decay-style", "constant", "--bf16",
         "--lr-warmup-iters", "25", "--log-interval", "50", "--eval-interval", "200",
         "--eval-iters", "4", "--save", save], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    validation = _validation_losses(result.stdout)
    print("validation losses:", validation)
    assert validation[-1] < validation[0] - 3.0
    token_spans = [float(v) for v in re.findall(r"token spans loss: (\S+)", result.stdout)]
    assert len(token_spans) == len(validation) and token_spans[-1] < token_spans[0] - 3.0
    assert "documents loss" not in result.stdout  # --bert-prob 1: token spans only

    tokenizer = GLMTokenizer(ensure_builtin_data()[1])
    model = load_model(CheckpointReader(save), TEST_DEVICE)
    passages = _held_out_passages(32)
    collator = build_collator("blank-infilling", BlankInfillingConfig(bert_prob=1.0,
                                                                      bert_mask_ratio=0.3),
                              tokenizer, sentence_end_table(tokenizer.pieces()), SEQ)
    batch = {k: v.to(TEST_DEVICE) for k, v in collator(passages, microbatch_rng(0, 0)).items()}
    shuffled = dict(batch, tokens=batch["tokens"].clone())
    generator = torch.Generator().manual_seed(0)
    for row, sep in enumerate(batch["sep"].tolist()):
        shuffled["tokens"][row, :sep] = batch["tokens"][row, torch.randperm(sep,
                                                                            generator=generator)]
    with torch.no_grad():
        loss, loss_shuffled = (language_model_loss(model(b), b)[0].item()
                               for b in (batch, shuffled))
    print(f"span loss with Part A {loss:.3f}, with Part A shuffled {loss_shuffled:.3f}")
    assert loss < loss_shuffled - 0.15
    model_loss, unigram_loss = _span_loss_and_unigram_baseline(model, batch, tokenizer)
    print(f"span tokens: model {model_loss:.3f}, unigram baseline {unigram_loss:.3f}")
    assert model_loss < unigram_loss - 0.5

    fills = []
    for passage in passages[:6]:
        at = len(passage) // 2
        part_a = passage[:at].tolist() + [tokenizer.mask] + passage[at + 2:].tolist()
        span = generate_spans(model, tokenizer, part_a, [at], max_span_tokens=8)[0]
        fills.append(span)
        print(f"...{tokenizer.detokenize(passage[at - 10:at])!r} [{tokenizer.detokenize(span)!r}"
              f" for {tokenizer.detokenize(passage[at:at + 2])!r}] "
              f"{tokenizer.detokenize(passage[at + 2:at + 8])!r}...")
    assert sum(len(span) > 0 for span in fills) >= len(fills) // 2
    # The same through the command-line tool, on a held-out passage as text.
    text = (tokenizer.detokenize(passages[0][:SEQ // 2]) + "[MASK]" +
            tokenizer.detokenize(passages[0][SEQ // 2 + 2:]))
    filled = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate.py"),
                             "--load", save, "--text", text], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert filled.returncode == 0, filled.stderr[-3000:]
    print(filled.stdout)
    # The tool prints what the model fills in (its default span limit, 32 tokens).
    (span,) = fill_blanks(model, tokenizer, text)
    assert filled.stdout.endswith(f"\n  blank 1: {span!r}\n")


# Bad input ------------------------------------------------------------------------------------
def _assert_clean_failure(result, message: str, *paths):
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert not any(os.path.exists(p) for p in paths)


def test_truncated_index_is_a_clean_error(tmp_path):
    prefix = ensure_builtin_data()[0]
    copy = str(tmp_path / "corpus")
    shutil.copy(prefix + ".bin", copy + ".bin")
    with open(prefix + ".idx", "rb") as f:
        (tmp_path / "corpus.idx").write_bytes(f.read()[:-100])
    save = str(tmp_path / "save")
    result = run_pretrain(QUICK + ["--objective", "blank-infilling", "--data-path", copy,
                                   "--train-iters", "1", "--save", save])
    _assert_clean_failure(result, f"--data-path {copy}: {copy}.idx", save)


def test_tokenizer_that_reserves_a_glm_token_is_a_clean_error(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(d.replace("\n", " ") for _, d in
                              zip(range(300), iter_builtin_documents())))
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "reserved"),
                                   vocab_size=300, user_defined_symbols=["[MASK]"],
                                   minloglevel=2)
    save = str(tmp_path / "save")
    result = run_pretrain(QUICK + ["--objective", "blank-infilling", "--tokenizer-model",
                                   str(tmp_path / "reserved.model"), "--train-iters", "1",
                                   "--save", save])
    _assert_clean_failure(result, "--tokenizer-model", save)
    assert "[MASK]" in result.stderr


@pytest.mark.parametrize("flags,message", [
    (["--data-path", "0.5", "a", "half", "b"], "'half' is not a positive weight"),
    (["--objective", "blank-infilling", "--bert-prob", "1.5"], "--bert-prob 1.5"),
    (["--objective", "blank-infilling", "--bert-prob", "0.8", "--gap-sentence-prob", "0.5"],
     "--gap-sentence-prob 0.5"),
], ids=["blend-weights", "probability", "mixture"])
def test_bad_objective_and_data_flags(tmp_path, flags, message):
    save = str(tmp_path / "save")
    result = run_pretrain(QUICK + flags + ["--train-iters", "1", "--save", save])
    _assert_clean_failure(result, message, save)
