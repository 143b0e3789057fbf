"""pretrain_glm.py end to end: resume bit for bit, atomic saves, clear errors on bad input."""

import os
import re

import pytest

from cli import QUICK, ROOT, assert_identical, checkpoint_files, run_pretrain


def _losses(stdout: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in
            re.finditer(r"iteration\s+(\d+)/\s*\d+ \|.*?lm loss: (\S+)", stdout)}


def test_resume_is_bit_exact(tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    common = QUICK + ["--train-iters", "6"]
    full = run_pretrain(common + ["--save", straight])
    assert full.returncode == 0, full.stderr
    first = run_pretrain(common + ["--save", split, "--exit-interval", "3"])
    assert first.returncode == 0, first.stderr
    assert sorted(_losses(first.stdout)) == [1, 2, 3]
    second = run_pretrain(common + ["--load", split, "--save", split])
    assert second.returncode == 0, second.stderr
    assert "loaded" in second.stdout and "at iteration 3" in second.stdout
    losses = _losses(full.stdout)
    resumed = {**_losses(first.stdout), **_losses(second.stdout)}
    assert resumed == losses
    # Weights, optimizer moments and schedule after 6 iterations: identical bit for bit.
    assert_identical(checkpoint_files(straight, 6), checkpoint_files(split, 6))


CRASH_DURING_SECOND_SAVE = """
import os, sys
import glm_megatron.training.checkpointing as checkpointing
writes = []
original = checkpointing._write
def dying_write(obj, path):
    writes.append(path)
    original(obj, path)
    if len(writes) == 4:  # the second save has written its first file
        os._exit(17)
checkpointing._write = dying_write
sys.argv = ["pretrain_glm.py"] + sys.argv[1:]
import runpy
runpy.run_path(os.path.join({root!r}, "pretrain_glm.py"), run_name="__main__")
"""


def test_save_killed_midway_leaves_previous_checkpoint(tmp_path):
    save = str(tmp_path / "ckpt")
    script = tmp_path / "crash.py"
    script.write_text(CRASH_DURING_SECOND_SAVE.format(root=ROOT))
    import subprocess
    import sys
    crashed = subprocess.run(
        [sys.executable, str(script), *QUICK, "--train-iters", "4", "--save-interval", "2",
         "--save", save], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, PYTHONPATH=ROOT))
    assert crashed.returncode == 17, crashed.stderr
    assert open(os.path.join(save, "latest_checkpointed_iteration.txt")).read() == "2"
    assert not os.path.exists(os.path.join(save, "iter_0000004"))
    resumed = run_pretrain(QUICK + ["--train-iters", "4", "--load", save, "--save", save])
    assert resumed.returncode == 0, resumed.stderr
    assert "at iteration 2" in resumed.stdout
    assert open(os.path.join(save, "latest_checkpointed_iteration.txt")).read() == "4"


def test_load_from_empty_directory_starts_fresh(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_pretrain(QUICK + ["--train-iters", "1", "--load", str(empty)])
    assert result.returncode == 0, result.stderr
    assert "no checkpoint found" in result.stdout


def test_changed_schedule_on_resume_needs_a_choice(tmp_path):
    """As Megatron-LM: resuming with another schedule is an error until a flag says which one
    to use, never a silent choice."""
    save = str(tmp_path / "ckpt")
    first = run_pretrain(QUICK + ["--train-iters", "2", "--save", save])
    assert first.returncode == 0, first.stderr
    longer = run_pretrain(QUICK + ["--train-iters", "4", "--load", save, "--save", save])
    assert longer.returncode == 2
    errors = [line for line in longer.stderr.splitlines() if "error:" in line]
    # The flag the user changed, not the decay iterations derived from it.
    assert len(errors) == 1 and "--train-iters 4 (checkpoint: 2):" in errors[0]
    assert "--lr-decay-iters" not in errors[0]
    assert "--override-opt_param-scheduler" in errors[0]
    assert not os.path.exists(os.path.join(save, "iter_0000004"))
    override = run_pretrain(QUICK + ["--train-iters", "4", "--load", save, "--save", save,
                                     "--override-opt_param-scheduler"])
    assert override.returncode == 0, override.stderr
    assert "at iteration 2" in override.stdout and len(_losses(override.stdout)) == 2


BAD_INPUTS = [
    ("tp-does-not-divide-world", ["--tensor-model-parallel-size", "2"], 1,
     "world size 1 is not divisible"),
    ("groups-not-divisible-by-tp", ["--tensor-model-parallel-size", "2",
                                    "--num-query-groups", "1"], 2, "--num-query-groups"),
    ("global-batch", ["--global-batch-size", "6", "--micro-batch-size", "4"], 1,
     "--global-batch-size 6"),
    ("missing-data", ["--data-path", "/nonexistent/corpus_text_document"], 1, "--data-path"),
    ("vocab-too-small", ["--vocab-size", "128"], 1, "--vocab-size"),
    ("sequence-too-long", ["--seq-length", "4096"], 1, "--max-position-embeddings"),
    ("layers-do-not-split", ["--pipeline-model-parallel-size", "2", "--num-layers", "3"], 2,
     "--num-layers 3"),
    ("virtual-without-pp", ["--num-layers-per-virtual-pipeline-stage", "1"], 1,
     "--pipeline-model-parallel-size"),
    ("sp-without-tp", ["--sequence-parallel"], 1, "--sequence-parallel"),
]


@pytest.mark.parametrize("name,flags,nproc,message", BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_fails_cleanly(tmp_path, name, flags, nproc, message):
    save, logs = tmp_path / "save", tmp_path / "tb"
    result = run_pretrain(QUICK + flags + ["--train-iters", "2", "--save", str(save),
                                           "--tensorboard-dir", str(logs)], nproc=nproc)
    # Status 2 from every rank; torchrun reports it and fails itself.
    assert result.returncode == 2 if nproc == 1 else (
        result.returncode != 0 and "exitcode  : 2" in result.stderr), result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "pretrain_glm.py: error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]  # from rank 0 only
    assert not save.exists() and not logs.exists()


def test_broken_tracker_is_an_error(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "latest_checkpointed_iteration.txt").write_text("7")
    result = run_pretrain(QUICK + ["--train-iters", "1", "--load", str(ckpt)])
    assert result.returncode == 2
    (error,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "iter_0000007, named by its latest_checkpointed_iteration.txt, does not exist" in error
