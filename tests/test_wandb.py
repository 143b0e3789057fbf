"""Weights & Biases with Megatron-LM's flags, through a stand-in `wandb` module that records
its calls: used only when asked, and a flag without the package is one line."""

import json
import os

from cli import QUICK, ROOT, run_pretrain

FAKE_WANDB = """
import json, os
def _record(*call):
    with open(os.environ["FAKE_WANDB_CALLS"], "a") as f:
        f.write(json.dumps(call, default=str) + "\\n")
def init(**kwargs):
    _record("init", kwargs)
def log(values, step):
    _record("log", values, step)
def finish():
    _record("finish")
"""


def test_wandb_gets_the_run_and_its_scalars(tmp_path):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "wandb.py").write_text(FAKE_WANDB)
    calls = tmp_path / "calls.jsonl"
    result = run_pretrain(QUICK + ["--train-iters", "2", "--wandb-project", "glm",
                                   "--wandb-exp-name", "tiny", "--wandb-save-dir",
                                   str(tmp_path / "w")],
                          env={"PYTHONPATH": f"{tmp_path / 'fake'}{os.pathsep}{ROOT}",
                               "FAKE_WANDB_CALLS": str(calls)})
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = [json.loads(line) for line in open(calls)]
    (kind, init), *logs, (end,) = recorded
    assert kind == "init" and end == "finish"
    assert (init["project"], init["name"], init["dir"]) == ("glm", "tiny", str(tmp_path / "w"))
    assert init["config"]["train_iters"] == 2 and init["config"]["num_layers"] == 2
    losses = {step: values["lm loss"] for _, values, step in logs if "lm loss" in values}
    assert sorted(losses) == [1, 2]
    assert not any("vs samples" in tag for _, values, _ in logs for tag in values)


def test_a_wandb_flag_without_the_package_is_one_line():
    result = run_pretrain(QUICK + ["--train-iters", "1", "--wandb-project", "glm"])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert errors == ["pretrain_glm.py: error: --wandb-project glm: the wandb package is not "
                      "installed; pip install wandb, or leave the W&B flags out"]
