"""--check-for-nan-in-loss-and-grad: a diverged run stops on every rank with one line naming the
iteration and the last good checkpoint, exit status 3, and never saves non-finite weights."""

import math
import os
import re

import pytest
import torch

from cli import run_pretrain

# The reproduction: a tiny model on the built-in corpus.
TINY = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "64", "--max-position-embeddings", "128", "--micro-batch-size", "2",
        "--global-batch-size", "4", "--log-interval", "1", "--eval-interval", "1000"]


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if "pretrain_glm.py: error:" in line]


def _saved_tensors(root: str):
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".pt"):
                state = torch.load(os.path.join(folder, name), weights_only=False)
                yield from _tensors(state)


def _tensors(value):
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def test_nan_gradients_stop_the_run_at_the_last_good_checkpoint(tmp_path):
    save = str(tmp_path / "save")
    result = run_pretrain(TINY + ["--train-iters", "20", "--lr", "1e6", "--save", save,
                                  "--save-interval", "1", "--tensorboard-dir",
                                  str(tmp_path / "tb")])
    assert result.returncode == 3, result.stderr[-2000:]
    (error,) = _error_lines(result)
    found = re.search(r"iteration (\d+): the gradient norm is nan: training diverged; the last "
                      r"good checkpoint is iteration (\d+) in (\S+) ", error)
    assert found, error
    stopped, last = int(found.group(1)), int(found.group(2))
    assert last == stopped - 1 and found.group(3) == os.path.abspath(save)
    assert open(os.path.join(save, "latest_checkpointed_iteration.txt")).read() == str(last)
    assert sorted(os.listdir(save)) == [f"iter_{i:07d}" for i in range(1, stopped)] + [
        "latest_checkpointed_iteration.txt"]
    assert all(torch.isfinite(t).all() for t in _saved_tensors(save))


FP16 = TINY + ["--fp16", "--train-iters", "8"]


@pytest.mark.parametrize("flags,message", [
    (["--initial-loss-scale", "1", "--min-loss-scale", "1", "--lr", "1e6"],
     "iteration 2: the loss is nan: training diverged; no checkpoint of this run precedes it"),
    (["--loss-scale", "1e30"],
     "iteration 2: the fp16 gradients overflowed in 2 iterations in a row at loss scale 1e+30 "
     "(the static --loss-scale)"),
    (["--loss-scale", "1e30", "--hysteresis", "3"],
     "iteration 3: the fp16 gradients overflowed in 3 iterations in a row"),
    (["--loss-scale", "1e-8"],
     "iteration 1: every gradient is zero (loss scale 1e-08 makes the fp16 gradients "
     "underflow: raise --loss-scale or --min-loss-scale)"),
], ids=["nan-loss", "static-scale-overflows", "hysteresis-bound", "underflow"])
def test_fp16_failures_the_loss_scale_cannot_fix(tmp_path, flags, message):
    save = tmp_path / "save"
    result = run_pretrain(FP16 + flags + ["--save", str(save), "--tensorboard-dir",
                                          str(tmp_path / "tb")])
    assert result.returncode == 3, result.stderr[-2000:]
    (error,) = _error_lines(result)
    assert message in error
    assert not save.exists()


def test_fp16_overflows_while_the_scale_comes_down_are_skipped(tmp_path):
    """From the default 2^32 the dynamic scale needs a dozen halvings on this model: those
    overflows are the search, not divergence."""
    result = run_pretrain(FP16 + ["--train-iters", "16", "--save", str(tmp_path / "save"),
                                  "--tensorboard-dir", str(tmp_path / "tb")])
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = [int(n) for n in re.findall(r"number of skipped iterations:\s+(\d+)",
                                          result.stdout)]
    assert len(skipped) == 16 and sum(skipped) >= 8 and skipped[-1] == 0
    scales = [float(s) for s in re.findall(r"loss scale: (\S+) \|", result.stdout)]
    assert scales[-1] < scales[0] == 2.0 ** 32 and scales == sorted(scales, reverse=True)


def test_without_the_check_non_finite_weights_are_still_never_saved(tmp_path):
    save = tmp_path / "save"
    result = run_pretrain(FP16 + ["--initial-loss-scale", "1", "--min-loss-scale", "1",
                                  "--lr", "1e6", "--train-iters", "3", "--eval-interval", "3",
                                  "--no-check-for-nan-in-loss-and-grad", "--save", str(save),
                                  "--tensorboard-dir", str(tmp_path / "tb")])
    assert result.returncode == 3, result.stderr[-2000:]
    (error,) = _error_lines(result)
    assert "iteration 3: the weights hold non-finite values (training diverged), so nothing " \
           "was saved" in error
    assert not save.exists()
    # NaN validation loss: perplexity nan too, not a finite number.
    assert "lm loss value: NAN | lm loss PPL: NAN |" in result.stdout


@pytest.mark.slow
def test_every_rank_stops_together(tmp_path):
    save = str(tmp_path / "save")
    result = run_pretrain(TINY + ["--train-iters", "20", "--lr", "1e6", "--save", save,
                                  "--save-interval", "1", "--tensorboard-dir",
                                  str(tmp_path / "tb")], nproc=2)
    assert result.returncode != 0
    (error,) = _error_lines(result)  # one line for the job, from rank 0
    assert re.search(r"iteration \d+: the gradient norm is nan: training diverged; the last "
                     r"good checkpoint is iteration \d+", error)
    assert "exitcode  : 3" in result.stderr  # torchrun's report of each rank
    assert all(torch.isfinite(t).all() for t in _saved_tensors(save))


def test_perplexity_of_a_nan_loss_is_nan(capsys):
    from glm_megatron.training.metrics import TrainingLogger
    logger = TrainingLogger(1, 1)
    logger.validation(5, math.nan, 20)
    logger.validation(6, 50.0, 24)
    out = capsys.readouterr().out
    assert "lm loss value: NAN | lm loss PPL: NAN |" in out
    assert f"lm loss PPL: {math.exp(20):.6E} |" in out  # Megatron-LM's cap for large losses
