"""Run pretrain_glm.py (or torchrun) as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

from glm_testing import TEST_DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(ROOT, "pretrain_glm.py")

# A quick run of the built-in corpus on the tiny GLM-4-architecture model.
QUICK = ["--model-preset", "chatglm3-tiny", "--seq-length", "64", "--micro-batch-size", "2",
         "--global-batch-size", "4", "--log-interval", "1", "--eval-interval", "1000",
         "--eval-iters", "1"]


def run_pretrain(args: list[str], nproc: int = 1, timeout: int = 600,
                 python: list[str] | None = None,
                 env: dict | None = None) -> subprocess.CompletedProcess:
    """One process runs on GLM_TEST_DEVICE, several on CPU (gloo); a later --device in `args`
    overrides. `env`: extra environment variables."""
    device = ["--device", TEST_DEVICE if nproc == 1 else "cpu"]
    if nproc == 1:
        command = [sys.executable, *(python or []), PRETRAIN, *device, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(nproc), PRETRAIN, *device, *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
