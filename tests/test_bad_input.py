"""Flags, data and tool inputs found bad before anything runs: one line naming the flag and the
fix, exit status 2, nothing written."""

import json
import os
import subprocess
import sys

import numpy
import pytest
import torch

from cli import QUICK, ROOT, file_size_limit, run_pretrain


def _refused(result, message: str, *untouched):
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
    assert all(not os.path.exists(p) for p in untouched)


@pytest.mark.parametrize("flags,message", [
    (["--micro-batch-size", "0"], "--micro-batch-size 0: must be at least 1"),
    (["--train-iters", "-5"], "--train-iters -5: must be at least 1"),
    (["--log-interval", "0"], "--log-interval 0: must be at least 1"),
    (["--num-workers", "-1"], "--num-workers -1: must be at least 0 (0 reads in the training "
                              "process)"),
    (["--eval-iters", "-1"], "--eval-iters -1: must be at least 0 (0 turns validation off)"),
    (["--lr", "-1"], "--lr -1.0: must be at least 0.0"),
    (["--lr", "nan"], "--lr nan: give a finite number"),
    (["--save-interval", "0"], "--save-interval 0: must be at least 1 (leave it out to save "
                               "only at the end)"),
    (["--adam-beta2", "1"], "--adam-beta2 1.0: must be smaller than 1"),
    (["--split", "100,0,0"], "--split 100,0,0 gives the validation split no share, but "
                             "--eval-interval 1000 asks for validation; give its second weight a "
                             "share (e.g. 98,2,0) or pass --eval-interval 0"),
], ids=["micro-batch", "train-iters", "log-interval", "num-workers", "eval-iters", "lr",
        "lr-nan", "save-interval", "beta2", "split-without-validation"])
def test_bad_flag(tmp_path, flags, message):
    save, logs = tmp_path / "save", tmp_path / "tb"
    result = run_pretrain(QUICK + ["--train-iters", "2"] + flags +
                          ["--save", str(save), "--tensorboard-dir", str(logs)])
    _refused(result, message, save, logs)


def test_split_without_validation_runs_with_validation_off(tmp_path):
    result = run_pretrain(QUICK + ["--train-iters", "1", "--split", "100,0,0",
                                   "--eval-interval", "0", "--save", str(tmp_path / "s"),
                                   "--tensorboard-dir", str(tmp_path / "tb")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation loss" not in result.stdout


def test_garbage_tokenizer_model(tmp_path):
    garbage = tmp_path / "tokenizer.model"
    garbage.write_bytes(b"\x00 not a sentencepiece model")
    result = run_pretrain(QUICK + ["--train-iters", "1", "--tokenizer-model", str(garbage),
                                   "--save", str(tmp_path / "save")])
    _refused(result, f"--tokenizer-model {garbage}: not a SentencePiece model",
             tmp_path / "save")


def test_token_ids_beyond_the_tokenizer_are_found_when_the_data_is_opened(tmp_path):
    """Data written elsewhere (no tokenizer record) with the wrong --tokenizer-model."""
    from glm_megatron.data.builtin import ensure_builtin_data
    from glm_megatron.data.indexed import write_indexed_dataset
    rng = numpy.random.default_rng(0)
    documents = [rng.integers(0, 20000, size=300).tolist() for _ in range(40)]
    prefix = str(tmp_path / "foreign_text_document")
    write_indexed_dataset(documents, prefix, vocab_size=32000, eod=1)
    top = max(max(d) for d in documents)
    result = run_pretrain(QUICK + ["--train-iters", "1", "--data-path", prefix,
                                   "--tokenizer-model", ensure_builtin_data()[1],
                                   "--save", str(tmp_path / "save")])
    _refused(result, f"--data-path {prefix} holds token id {top}, but the tokenizer has 8012 "
                     "tokens: the data was preprocessed with another tokenizer",
             tmp_path / "save")
    cached = [os.path.join(d, f) for d, _, files in os.walk(tmp_path / "index-cache")
              for f in files if f.endswith(".largest_token_id")]
    assert len(cached) == 1 and open(cached[0]).read() == str(top)


@pytest.mark.slow
def test_a_layout_error_under_torchrun_is_printed_once(tmp_path):
    result = run_pretrain(QUICK + ["--train-iters", "1", "--tensor-model-parallel-size", "3",
                                   "--save", str(tmp_path / "save")], nproc=2)
    errors = [line for line in result.stderr.splitlines() if "pretrain_glm.py: error:" in line]
    assert errors == ["pretrain_glm.py: error: world size 2 is not divisible by "
                      "--tensor-model-parallel-size 3 x --pipeline-model-parallel-size 1; "
                      "launch a multiple of 3 processes"]
    assert result.returncode != 0 and "exitcode  : 2" in result.stderr  # torchrun's report
    assert not (tmp_path / "save").exists()


# Full disk ------------------------------------------------------------------------------------
def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(tmp_path):
    save = tmp_path / "save"
    first = run_pretrain(QUICK + ["--train-iters", "2", "--save", str(save)])
    assert first.returncode == 0, first.stderr[-3000:]
    # Files may grow to 1 MB: the model file (a few MB) cannot be written.
    result = run_pretrain(QUICK + ["--train-iters", "4", "--load", str(save), "--save",
                                   str(save), "--override-opt_param-scheduler"],
                          preexec_fn=file_size_limit(1 << 20))
    _refused(result, f"cannot write {save}/.staging_iter_0000004/mp_rank_00/"
                     "model_optim_rng.pt: file too large; free space or point --save elsewhere")
    assert sorted(os.listdir(save)) == ["iter_0000002", "latest_checkpointed_iteration.txt"]


def test_preprocessing_leaves_nothing_behind_on_a_full_disk(tmp_path):
    from glm_megatron.data.builtin import ensure_builtin_data
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as f:
        for i in range(400):
            f.write(json.dumps({"text": f"document {i} " + "lorem ipsum dolor " * 200}) + "\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input",
         str(corpus), "--tokenizer-model", ensure_builtin_data()[1], "--output-prefix",
         str(out / "c"), "--quiet"], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT), preexec_fn=file_size_limit(100_000))
    _refused(result, f"cannot write {out}/c_*_document.bin/.idx: file too large; nothing "
                     "written")
    assert os.listdir(out) == []  # no .bin/.idx, and no .tmp-* either


# Tools ----------------------------------------------------------------------------------------
def test_tokenizer_training_on_overlong_text_names_the_sentence_limit(tmp_path):
    corpus = tmp_path / "long.jsonl"
    words = ["alpha", "beta", "gamma", "delta"]
    with open(corpus, "w") as f:
        for d in range(10):
            f.write(json.dumps({"text": " ".join(words[(d + i) % 4] for i in range(5000))}) + "\n")
    tool = [sys.executable, os.path.join(ROOT, "tools", "train_tokenizer.py"), "--input",
            str(corpus), "--vocab-size", "270", "--model-prefix", str(tmp_path / "tok")]
    env = dict(os.environ, PYTHONPATH=ROOT)
    refused = subprocess.run(tool, capture_output=True, text=True, env=env)
    _refused(refused, "--input: all 10 text pieces are longer than the sentence limit of 16384 "
                      "bytes, and SentencePiece skips such pieces; raise --max-sentence-length",
             tmp_path / "tok.model")
    trained = subprocess.run(tool + ["--max-sentence-length", "40000"], capture_output=True,
                             text=True, env=env)
    assert trained.returncode == 0, trained.stderr
    assert (tmp_path / "tok.model").is_file()


def test_generation_prompt_longer_than_the_position_table(tmp_path):
    from glm_megatron.convert.checkpoint import CheckpointWriter
    from glm_megatron.convert.schema import Head
    from glm_megatron.data.builtin import ensure_builtin_data
    from glm_testing import tiny_config
    config = tiny_config("glm-tiny", vocab_size=8064, max_position_embeddings=64)
    writer = CheckpointWriter(str(tmp_path / "ckpt"), config, Head(), 1, 1)
    writer.write_stage(0, {name: torch.full(p.shape, 0.02)
                           for name, p in writer.stage_params(0).items()})
    writer.finish()
    tool = [sys.executable, os.path.join(ROOT, "tools", "generate.py"), "--load",
            str(tmp_path / "ckpt"), "--tokenizer-model", ensure_builtin_data()[1]]
    env = dict(os.environ, PYTHONPATH=ROOT)
    long_text = " ".join(["word"] * 100) + " [MASK]."
    result = subprocess.run(tool + ["--text", long_text], capture_output=True, text=True,
                            env=env)
    _refused(result, "the text is 104 tokens long but the model has 64 positions "
                     "(--max-position-embeddings); shorten the text")
    result = subprocess.run(tool + ["--text", "A [MASK].", "--max-span-tokens", "64"],
                            capture_output=True, text=True, env=env)
    _refused(result, "--max-span-tokens 64 would reach block position 65, beyond the model's "
                     "64 positions; give at most 62")
