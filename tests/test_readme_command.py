"""The README's main command, exactly as written (after the install): `python pretrain_glm.py`
trains on the built-in corpus, lowers the validation loss, and leaves logs and a checkpoint."""

import os
import re
import subprocess
import sys

import pytest

from cli import PRETRAIN, ROOT


@pytest.mark.slow
def test_default_run(tmp_path):
    result = subprocess.run([sys.executable, PRETRAIN], cwd=tmp_path, capture_output=True,
                            text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr[-3000:]
    validation = [float(v) for v in re.findall(r"validation loss at iteration \d+ \| "
                                               r"lm loss value: (\S+)", result.stdout)]
    assert len(validation) >= 2 and validation[-1] < validation[0] - 2.0, validation
    checkpoint = tmp_path / "runs" / "builtin" / "checkpoints"
    assert (checkpoint / "latest_checkpointed_iteration.txt").read_text() == "100"
    assert any(f.startswith("events.out.tfevents")
               for f in os.listdir(tmp_path / "runs" / "builtin" / "tensorboard"))
    assert str(checkpoint / "iter_0000100") in result.stdout
