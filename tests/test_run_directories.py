"""Run directories: the run without arguments keeps its own folders, any other saves only to
--save; a --save holding a checkpoint is continued, unless it is another experiment's; a
--load that does not exist is an error."""

import argparse
import math
import os
import re
import shutil
import signal

import pytest

from cli import QUICK, run_pretrain, start_pretrain, wait_for_line
from glm_megatron.arguments import parse_args
from glm_megatron.config import ConfigError
from glm_megatron.training.pretrain import _saved_checkpoint
from glm_megatron.training.save_directory import resume_from_save


def test_only_the_run_without_arguments_uses_the_builtin_folders():
    default = parse_args([])
    assert (default.save, default.tensorboard_dir) == ("runs/builtin/checkpoints",
                                                       "runs/builtin/tensorboard")
    flagged = parse_args(["--train-iters", "3"])
    assert (flagged.save, flagged.tensorboard_dir) == (None, None)


def test_a_save_folder_with_a_checkpoint_is_continued(tmp_path):
    args = argparse.Namespace(save=str(tmp_path), load=None)
    assert resume_from_save(args) is None and args.load is None  # nothing there yet
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")
    assert resume_from_save(args).startswith(f"resuming from iteration 7 in --save {tmp_path}")
    assert args.load == str(tmp_path) and args.load_from_save
    explicit = argparse.Namespace(save=str(tmp_path), load="elsewhere")
    assert resume_from_save(explicit) is None and explicit.load == "elsewhere"


def _load(path, exit_on_missing=False):
    return argparse.Namespace(load=str(path), ckpt_step=None,
                              exit_on_missing_checkpoint=exit_on_missing)


def test_a_load_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=f"--load {tmp_path}/typo does not exist"):
        _saved_checkpoint(_load(tmp_path / "typo"))
    assert _saved_checkpoint(_load(tmp_path)) is None  # empty: from scratch, said
    with pytest.raises(ConfigError, match="holds no checkpoint .* --exit-on-missing-checkpoint"):
        _saved_checkpoint(_load(tmp_path, exit_on_missing=True))


# Two iterations of the tiny model with a test split, saved: (folder, the run's stdout).
TRAINED = QUICK + ["--split", "90,5,5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    save = str(tmp_path_factory.mktemp("trained") / "run")
    result = run_pretrain(TRAINED + ["--train-iters", "2", "--save", save])
    assert result.returncode == 0, result.stderr[-2000:]
    return save, result.stdout


def test_rerunning_continues_and_another_experiment_is_refused(trained, tmp_path):
    save = str(tmp_path / "run")
    shutil.copytree(trained[0], save)
    again = run_pretrain(TRAINED + ["--train-iters", "3", "--override-opt_param-scheduler",
                                    "--save", save])
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.splitlines()[0].endswith(
        f"resuming from iteration 2 in --save {save}, which holds this run's checkpoint "
        "(--load is implied; give another --save to start afresh)")
    assert re.findall(r"iteration\s+(\d+)/", again.stdout) == ["3"]
    other = run_pretrain(TRAINED + ["--train-iters", "2", "--hidden-size", "32", "--save", save])
    assert other.returncode == 2
    errors = [line for line in other.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        f"pretrain_glm.py: error: --save {save}: the checkpoint is of another architecture "
        "(--hidden-size 32 (checkpoint: 64)"), other.stderr[-2000:]
    assert errors[0].endswith("or pass --model-preset chatglm3-tiny")
    # No architecture flag: the checkpoint's architecture (--use-checkpoint-args implied).
    bare = [flag for flag in QUICK if flag not in ("--model-preset", "chatglm3-tiny")]
    continued = run_pretrain(bare + ["--train-iters", "1", "--load", save, "--finetune",
                                     "--save", str(tmp_path / "continued")])
    assert continued.returncode == 0, continued.stderr[-2000:]
    assert "implied: architecture from the checkpoint in --load" in continued.stdout
    assert "model chatglm3-tiny: 2 layers x 64" in continued.stdout


def test_ctrl_c_says_what_was_saved_and_how_to_resume(tmp_path):
    save, log = str(tmp_path / "run"), str(tmp_path / "log.txt")
    flags = QUICK + ["--train-iters", "100000", "--save-interval", "2", "--save", save]
    run = start_pretrain(flags, log)
    try:
        wait_for_line(log, r"saved checkpoint at iteration 2 ", run)
    finally:
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
        status = run.wait(timeout=120)
    output = open(log).read()
    assert status == 130 and "Traceback" not in output, output[-3000:]
    (line,) = [line for line in output.splitlines() if "interrupted" in line]
    saved = int(open(os.path.join(save, "latest_checkpointed_iteration.txt")).read())
    assert re.fullmatch(rf"pretrain_glm.py: interrupted at iteration \d+; the last saved "
                        rf"iteration is {saved} in {save}; resume with: python "
                        rf"pretrain_glm.py .*--save {save}", line), line


def test_skip_train_evaluates_the_checkpoint_and_writes_nothing(trained):
    save, training_output = trained
    before = sorted(os.listdir(save))
    evaluated = run_pretrain(TRAINED + ["--skip-train", "--load", save])
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "consumed samples" not in evaluated.stdout  # no training iteration
    found = {split: (loss, float(ppl)) for split, loss, ppl in re.findall(
        r" (validation|test) loss at iteration 2 \| lm loss value: (\S+) \| lm loss PPL: (\S+)",
        evaluated.stdout)}
    assert sorted(found) == ["test", "validation"]
    for loss, ppl in found.values():
        assert ppl == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert sorted(os.listdir(save)) == before  # nothing saved, no lock left
    # The training run's last validation: the same weights on the same first samples.
    assert re.findall(r"validation loss at iteration 2 \| lm loss value: (\S+)",
                      training_output) == [found["validation"][0]]
