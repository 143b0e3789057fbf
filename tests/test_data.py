"""Data pipeline: tokenizer, built-in corpus cache, indexed files, datasets, sampler, errors."""

import multiprocessing
import os
import signal
import socket
import subprocess
import sys

import numpy
import pytest
import torch
import torch.distributed as dist

from glm_megatron.data.builtin import builtin_cache_dir, ensure_builtin_data
from glm_megatron.data.builtin_corpus import MIN_DOCUMENT_CHARS, iter_builtin_documents
from glm_megatron.data.datasets import DataError, build_datasets
from glm_megatron.data.indexed import write_indexed_dataset
from glm_megatron.data.sampler import _ctrl_c_after_the_block, build_data_loader
from glm_megatron.data.tokenizer import SPECIAL_TOKENS, GLMTokenizer, padded_vocab_size
from glm_megatron.objectives import CausalCollator
from multiprocess import run_distributed

SEQ, SAMPLES = 64, (64, 16, 8)

_BUILD = """
from glm_megatron.data.builtin import ensure_builtin_data
print("RESULT", *ensure_builtin_data())
"""


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """Cold build of the built-in corpus by two processes at once, as torchrun would start it."""
    cache = str(tmp_path_factory.mktemp("cache"))
    env = dict(os.environ, GLM_MEGATRON_CACHE=cache)
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD], env=env, text=True,
                              stdout=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    previous = os.environ.get("GLM_MEGATRON_CACHE")
    os.environ["GLM_MEGATRON_CACHE"] = cache
    yield outputs
    if previous is None:
        del os.environ["GLM_MEGATRON_CACHE"]
    else:
        os.environ["GLM_MEGATRON_CACHE"] = previous


@pytest.fixture(scope="module")
def tokenizer(builtin):
    return GLMTokenizer(ensure_builtin_data()[1])


@pytest.fixture(scope="module")
def world():
    """megatron-core's BlendedDataset asks torch.distributed for the rank: a world of one."""
    if dist.is_initialized():
        yield
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _write(tmp_path, documents, name="tiny", vocab_size=100, eod=1):
    prefix = str(tmp_path / name)
    write_indexed_dataset(documents, prefix, vocab_size, eod)
    return prefix


class _TinyTokenizer:
    vocab_size, eod, pad = 100, 1, 99


# Tokenizer -----------------------------------------------------------------------------------
def test_special_tokens_follow_sentencepiece_in_chatglm3_order(tokenizer):
    sp_size = tokenizer.vocab_size - len(SPECIAL_TOKENS)
    assert list(tokenizer.special_tokens) == [
        "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>",
        "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>", "[dBLOCK]", "[CLS]", "<pad>"]
    assert list(tokenizer.special_tokens.values()) == list(range(sp_size, tokenizer.vocab_size))
    assert (tokenizer.mask, tokenizer.gmask, tokenizer.smask, tokenizer.sop, tokenizer.eop) == \
        tuple(range(sp_size, sp_size + 5))
    assert (tokenizer.dblock, tokenizer.cls, tokenizer.pad) == \
        (sp_size + 9, sp_size + 10, sp_size + 11)
    assert tokenizer.eod < sp_size and tokenizer.pad != tokenizer.eod
    assert sp_size == 8000


def test_round_trip_keeps_text_exactly(tokenizer):
    texts = ["The \"if\" statement is used for conditional execution.",
             "  def f(x):\n\treturn {'a': [1, 2]}  # indented\n\n\n",
             "naïve café, 日本語, emoji 😀, math ∑ x² ≤ ∞", "[MASK] is plain text here"]
    for text in texts:
        ids = tokenizer.tokenize(text)
        assert tokenizer.eod not in ids and max(ids) < tokenizer.vocab_size - len(SPECIAL_TOKENS)
        assert tokenizer.detokenize(ids) == text
    ids = [tokenizer.gmask, tokenizer.sop] + tokenizer.tokenize("a b") + \
        [tokenizer.eop, tokenizer.eod]
    # "a b" is encoded with SentencePiece's dummy prefix, i.e. as " a b" after a special token.
    assert tokenizer.detokenize(ids) == "[gMASK]<sop> a b<eop></s>"
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        tokenizer.detokenize([tokenizer.vocab_size])


def test_padded_vocab_size_follows_megatron():
    def megatron(vocab, divisible_by, tp):  # Megatron-LM's _vocab_size_with_padding
        after = vocab
        while after % (divisible_by * tp):
            after += 1
        return after

    for vocab, divisible_by, tp in [(8012, 128, 1), (8064, 128, 1), (50257, 128, 1),
                                    (50257, 128, 2), (64798, 128, 4), (1, 1, 1), (130, 64, 8)]:
        assert padded_vocab_size(vocab, divisible_by, tp) == megatron(vocab, divisible_by, tp)
    assert padded_vocab_size(8012) == 8064


# Built-in corpus ------------------------------------------------------------------------------
def test_builtin_data_builds_once_and_is_cached(builtin, capsys):
    building = [line for out in builtin for line in out.splitlines() if "building" in line]
    assert len(building) == 1, builtin  # one process built, the other waited for the lock
    results = [line.split()[1:] for out in builtin for line in out.splitlines()
               if line.startswith("RESULT")]
    assert results[0] == results[1] == list(ensure_builtin_data())
    prefix, model = ensure_builtin_data()
    assert capsys.readouterr().out == ""  # cache hit: no rebuild, no output
    assert os.path.dirname(prefix) == os.path.dirname(model) == builtin_cache_dir()
    assert not [n for n in os.listdir(builtin_cache_dir()) if ".tmp-" in n]


def test_builtin_corpus_is_english_text_of_useful_size():
    documents = list(iter_builtin_documents())
    assert len(documents) > 500 and sum(map(len, documents)) > 1_000_000
    assert min(map(len, documents)) >= MIN_DOCUMENT_CHARS and len(set(documents)) == len(documents)
    assert any(d.startswith('The "if" statement') for d in documents)


# Indexed dataset -------------------------------------------------------------------------------
def test_indexed_dataset_reads_back_via_megatron_core(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    documents = [[5, 6, 7], [], [9], list(range(2, 60))]
    prefix = _write(tmp_path, documents)
    dataset = IndexedDataset(prefix)
    assert dataset.index.dtype == numpy.uint16 and len(dataset) == 3
    # Indexed explicitly: IndexedDataset has no __iter__ and does not stop at its end.
    assert [dataset[i].tolist() for i in range(3)] == [d + [1] for d in documents if d]
    big = _write(tmp_path, [[70_000, 3]], "big", vocab_size=80_000)
    big = IndexedDataset(big)  # kept alive: its items are views into its memory map
    assert big.index.dtype == numpy.int32 and big[0].tolist() == [70_000, 3, 1]
    assert sorted(os.listdir(tmp_path)) == ["big.bin", "big.idx", "tiny.bin", "tiny.idx"]


def test_indexed_write_that_fails_leaves_no_files(tmp_path):
    def documents():
        yield [3, 4]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, documents())
    with pytest.raises(ValueError, match="outside"):
        _write(tmp_path, [[3], [100]])
    assert os.listdir(tmp_path) == []


# Datasets and batches -------------------------------------------------------------------------
def test_causal_batch_format(builtin, tokenizer, world, tmp_path):
    train, valid, test = build_datasets([ensure_builtin_data()[0]], "969,30,1", SEQ, 1234,
                                        SAMPLES, tokenizer, cache_path=str(tmp_path))
    assert len(train) >= SAMPLES[0] and len(valid) >= SAMPLES[1] and len(test) >= SAMPLES[2]
    assert train[0].shape == (SEQ + 1,) and train[0].dtype == numpy.int64
    batch = next(iter(build_data_loader(train, CausalCollator(tokenizer, SEQ), 0, 4, 0, 1,
                                        seed=1234)))
    assert sorted(batch) == ["labels", "loss_mask", "position_ids", "tokens"]
    for key, dtype in [("tokens", torch.int64), ("labels", torch.int64),
                       ("loss_mask", torch.float32), ("position_ids", torch.int64)]:
        assert batch[key].dtype == dtype and batch[key].shape == (4, SEQ)
    assert torch.equal(batch["tokens"][:, 1:], batch["labels"][:, :-1])
    assert torch.equal(batch["position_ids"], torch.arange(SEQ).expand(4, SEQ))
    assert torch.equal(batch["loss_mask"], torch.ones(4, SEQ))
    assert int(batch["tokens"].max()) < tokenizer.vocab_size


def test_weighted_blend_and_unused_splits(tmp_path, world):
    a = _write(tmp_path, [[2 + i % 50] * 30 for i in range(40)], "a")
    b = _write(tmp_path, [[60 + i % 30] * 30 for i in range(40)], "b")
    train, valid, test = build_datasets(["0.75", a, "0.25", b], "8,2,0", 16, 1, (200, 0, 0),
                                        _TinyTokenizer())
    assert valid is None and test is None and len(train) >= 200
    from_a = sum(int(train[i][0]) < 60 for i in range(200))
    assert 140 <= from_a <= 160


def _first_batches(seed, steps, global_batch, micro, dp_rank, dp_size, consumed=0):
    prefix = ensure_builtin_data()[0]
    tokenizer = GLMTokenizer(ensure_builtin_data()[1])
    train = build_datasets([prefix], "969,30,1", SEQ, seed, (steps * global_batch, 0, 0),
                           tokenizer)[0]
    batches = iter(build_data_loader(train, CausalCollator(tokenizer, SEQ), consumed, micro,
                                     dp_rank, dp_size, seed=seed))
    per_step = global_batch // (micro * dp_size)
    return [torch.cat([next(batches)["tokens"] for _ in range(per_step)]) for _ in range(steps)]


def test_sampler_order_depends_only_on_seed_and_resumes_exactly(builtin, world):
    full = _first_batches(1234, 4, 8, 2, 0, 1)
    assert all(torch.equal(x, y) for x, y in zip(full, _first_batches(1234, 4, 8, 4, 0, 1)))
    assert all(torch.equal(x, y) for x, y in zip(full[2:], _first_batches(1234, 2, 8, 2, 0, 1,
                                                                          consumed=16)))
    assert not torch.equal(full[0], _first_batches(99, 1, 8, 2, 0, 1)[0])
    # DP=2 by hand: each step, rank r holds micro-batch slices r of every chunk of 2*micro.
    ranks = [_first_batches(1234, 4, 8, 2, r, 2) for r in range(2)]
    for step in range(4):
        merged = torch.stack([ranks[r][step].view(2, 2, SEQ) for r in range(2)], 1)
        assert torch.equal(merged.reshape(8, SEQ), full[step])


def _dp_worker(out_dir: str, cache: str):
    os.environ["GLM_MEGATRON_CACHE"] = cache
    dist.init_process_group("gloo")
    batches = _first_batches(1234, 2, 8, 2, dist.get_rank(), 2, consumed=8)
    torch.save(batches, os.path.join(out_dir, f"rank{dist.get_rank()}.pt"))
    dist.destroy_process_group()


def test_two_ranks_build_together_and_split_the_global_batch(builtin, world, tmp_path):
    full = _first_batches(1234, 3, 8, 2, 0, 1)
    run_distributed(_dp_worker, 2, str(tmp_path), os.environ["GLM_MEGATRON_CACHE"])
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for step in range(2):
        merged = torch.stack([ranks[r][step].view(2, 2, SEQ) for r in range(2)], 1)
        assert torch.equal(merged.reshape(8, SEQ), full[step + 1])


def _numbered(items, _rng):
    return {"x": torch.tensor(items)}


@pytest.fixture
def ctrl_c_raises():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_waits_for_the_batch_in_flight_and_a_second_one_does_not(ctrl_c_raises):
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_after_the_block():
            signal.raise_signal(signal.SIGINT)
            finished.append(True)
    assert finished
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_after_the_block():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            finished.append(False)
    assert finished == [True]


def test_workers_leave_ctrl_c_to_the_training_process(ctrl_c_raises):
    batches = iter(build_data_loader(list(range(64)), _numbered, 0, 2, 0, 1, seed=0,
                                     num_workers=2))
    assert next(batches)["x"].tolist() == [0, 1]
    workers = multiprocessing.active_children()
    assert len(workers) == 2
    for worker in workers:  # Ctrl-C reaches the terminal's whole process group
        os.kill(worker.pid, signal.SIGINT)
    assert [next(batches)["x"].tolist() for _ in range(8)][-1] == [16, 17]


# Errors ---------------------------------------------------------------------------------------
def _build(data_path, split="969,30,1", samples=SAMPLES):
    return build_datasets(data_path, split, 8, 1, samples, _TinyTokenizer())


def test_missing_or_damaged_data_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match=r"--data-path .*nothere.bin does not exist"):
        _build([str(tmp_path / "nothere")])
    prefix = _write(tmp_path, [[5] * 40 for _ in range(20)])
    with pytest.raises(DataError, match="drop the .bin extension"):
        _build([prefix + ".bin"])
    with open(prefix + ".bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError, match="--data-path .*tiny.bin has 100 bytes"):
        _build([prefix])
    prefix = _write(tmp_path, [[5] * 40 for _ in range(20)], "cut")
    size = os.path.getsize(prefix + ".idx")
    with open(prefix + ".idx", "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(DataError, match="--data-path .*cut.idx is truncated"):
        _build([prefix])
    with open(prefix + ".idx", "r+b") as f:
        f.truncate(5)
    with pytest.raises(DataError, match="not a Megatron index"):
        _build([prefix])


def test_bad_flags_are_data_errors(tmp_path):
    prefix = _write(tmp_path, [[5] * 40 for _ in range(3)])
    with pytest.raises(DataError, match=r"--data-path: 'x' is not a positive weight"):
        _build(["x", prefix, "0.3", prefix])
    with pytest.raises(DataError, match="--data-path.*weighted pairs"):
        _build([prefix, prefix, prefix])
    with pytest.raises(DataError, match="--split 'a,b'"):
        _build([prefix], split="a,b")
    with pytest.raises(DataError, match="--split 0,1,0 gives the train split no share"):
        _build([prefix], split="0,1,0")
    assert _build([prefix], split="1,0,0")[1:] == (None, None)  # no share: no evaluation
    # 3 documents: 969,30,1 leaves nothing for valid; megatron-core would loop forever.
    with pytest.raises(DataError, match="--split 969,30,1 leaves the valid split .* empty"):
        _build([prefix])
    with pytest.raises(DataError, match="leaves the train split"):
        _build([prefix], split="1,50,50")
