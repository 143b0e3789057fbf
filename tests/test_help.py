"""--help: every flag's default shown once (its value, or 'from --model-preset'), usage examples
at the end, and answered without importing torch or megatron-core."""

import os
import re
import subprocess
import sys

from cli import ROOT

ANSWER_HELP = """
import runpy, sys
sys.argv = ["{script}", "--help"]
try:
    runpy.run_path("{script}", run_name="__main__")
except SystemExit:
    pass
print("heavy modules:", sorted(m for m in ("torch", "megatron") if m in sys.modules))
"""


def _answer_help(script: str) -> str:
    """`script --help`'s output, which must not have imported torch or megatron-core."""
    result = subprocess.run([sys.executable, "-c", ANSWER_HELP.format(script=script)], cwd=ROOT,
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("heavy modules: []")
    return result.stdout


def _option_blocks(text: str) -> dict[str, str]:
    """Option -> its whole help text, from the formatted help (options only)."""
    blocks, current = {}, None
    for line in text.split("\nexamples:")[0].splitlines():
        if re.match(r"  --?\w", line):
            current = line.split()[0].rstrip(",")
            blocks[current] = line
        elif line.startswith("   ") and current:
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


def _check_defaults(text: str, exactly_once: bool = True):
    blocks = _option_blocks(text)
    assert len(blocks) > 50
    for option, block in blocks.items():
        if option != "-h":  # finetune's --head describes two defaults in words
            count = block.lower().count("default")
            assert count == 1 if exactly_once else count >= 1 and "(default:" not in \
                block.split("(default:", 1)[-1], block


def test_pretrain_help_shows_each_default_once_without_torch():
    text = _answer_help("pretrain_glm.py")
    _check_defaults(text)
    blocks = _option_blocks(text)
    assert blocks["--num-layers"].endswith("(default: from --model-preset)")
    assert blocks["--micro-batch-size"].endswith("(default: 4)")
    assert blocks["--sequence-parallel"].endswith("(default: off)")
    assert "runs/builtin/checkpoints" in blocks["--save"]
    examples = text.split("\nexamples:\n")[1]
    assert examples.count("pretrain_glm.py") >= 4


def test_finetune_help_shows_each_default_once_without_torch():
    _check_defaults(_answer_help("finetune_glm.py"), exactly_once=False)
