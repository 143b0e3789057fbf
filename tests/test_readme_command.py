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
    # Run again, it continues its own checkpoint (nothing left to train) and keeps its folders.
    again = subprocess.run([sys.executable, PRETRAIN], cwd=tmp_path, capture_output=True,
                           text=True, timeout=900, env=dict(os.environ, PYTHONPATH=ROOT))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from iteration 100 in --save runs/builtin/checkpoints" in \
        again.stdout.splitlines()[0]
    assert "iteration 100 already reached" in again.stdout
    # The README's export and transformers snippet, as written (the install line aside): the
    # continuation is words the model learned, not blank lines.
    os.symlink(os.path.join(ROOT, "tools"), tmp_path / "tools")  # run from a checkout
    block = _bash_block("## Export to Hugging Face")
    commands = "\n".join(line for line in block.splitlines() if not line.startswith("pip "))
    exported = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path,
                              capture_output=True, text=True, timeout=900,
                              env=dict(os.environ, PYTHONPATH=ROOT))
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert re.match(r"'Return a [a-z]+", exported.stdout.splitlines()[-1]), exported.stdout


def _bash_block(heading: str) -> str:
    """The first ```bash block after `heading` in the README."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index(heading):]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_own_data_commands_run_as_written(tmp_path):
    """The README's own-data steps, every command as written, on the built-in corpus (from a
    folder holding the repository's tools and entry points, as a checkout does)."""
    for name in ("tools", "pretrain_glm.py"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    block = _bash_block("## Your own data")
    assert "--vocab-size 8000" in block
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                            capture_output=True, text=True, timeout=1800,
                            env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "data" / "corpus_text_document.tokenizer.json").is_file()
    assert re.search(r"If the file cannot be opened, an \[MASK\] is raised.\n  blank 1: '.+'",
                     result.stdout), result.stdout[-2000:]
