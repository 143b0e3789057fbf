"""Run pretrain_glm.py and finetune_glm.py (or torchrun) as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(ROOT, "pretrain_glm.py")
FINETUNE = os.path.join(ROOT, "finetune_glm.py")

# A quick run of the built-in corpus on the tiny GLM-4-architecture model.
QUICK = ["--model-preset", "chatglm3-tiny", "--seq-length", "64", "--micro-batch-size", "2",
         "--global-batch-size", "4", "--log-interval", "1", "--eval-interval", "1000",
         "--eval-iters", "1"]


def run_pretrain(args: list[str], nproc: int = 1, timeout: int = 600,
                 python: list[str] | None = None) -> subprocess.CompletedProcess:
    return run_entry(PRETRAIN, args, nproc, timeout, python)


def run_finetune(args: list[str], nproc: int = 1, timeout: int = 600) -> \
        subprocess.CompletedProcess:
    return run_entry(FINETUNE, args, nproc, timeout)


def run_entry(script: str, args: list[str], nproc: int = 1, timeout: int = 600,
              python: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS`, or torchrun with `nproc` processes."""
    if nproc == 1:
        command = [sys.executable, *(python or []), script, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(nproc), script, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
