"""Run pretrain_glm.py and finetune_glm.py (or torchrun) as a user would, in a subprocess."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time

import numpy
import torch

from glm_testing import TEST_DEVICE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = os.path.join(ROOT, "pretrain_glm.py")
FINETUNE = os.path.join(ROOT, "finetune_glm.py")

# A quick run of the built-in corpus on the tiny GLM-4-architecture model.
QUICK = ["--model-preset", "chatglm3-tiny", "--seq-length", "64", "--micro-batch-size", "2",
         "--global-batch-size", "4", "--log-interval", "1", "--eval-interval", "1000",
         "--eval-iters", "1"]


def file_size_limit(limit: int):
    """A preexec_fn under which writing a file past `limit` bytes fails (EFBIG), as a full
    disk fails a write (ENOSPC): the same failure path, without needing a small file system."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, do not kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def run_pretrain(args: list[str], nproc: int = 1, timeout: int = 600,
                 python: list[str] | None = None, env: dict | None = None,
                 preexec_fn=None) -> subprocess.CompletedProcess:
    return run_entry(PRETRAIN, args, nproc, timeout, python, env, preexec_fn)


def run_finetune(args: list[str], nproc: int = 1, timeout: int = 600) -> \
        subprocess.CompletedProcess:
    return run_entry(FINETUNE, args, nproc, timeout)


def run_entry(script: str, args: list[str], nproc: int = 1, timeout: int = 600,
              python: list[str] | None = None, env: dict | None = None,
              preexec_fn=None) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS`, or torchrun with `nproc` processes. One process runs on
    GLM_TEST_DEVICE, several on CPU (gloo); a later --device in `args` overrides. `env`: extra
    environment variables."""
    device = ["--device", TEST_DEVICE if nproc == 1 else "cpu"]
    if nproc == 1:
        command = [sys.executable, *(python or []), script, *device, *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(nproc), script, *device, *args]
    env = _env(env)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec_fn)


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, **(extra or {})}


def start_pretrain(args: list[str], log_path: str, env: dict | None = None,
                   script: str = PRETRAIN) -> subprocess.Popen:
    """pretrain_glm.py (or `script`) in the background, in a session of its own (signal it
    with os.killpg), stdout and stderr into `log_path`."""
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, script, *args], cwd=ROOT, env=_env(env),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_ranks(args: list[str], nproc: int, log_dir: str, env: dict | None = None
                ) -> list[subprocess.Popen]:
    """`nproc` processes that form one job the way torchrun starts them (RANK, WORLD_SIZE,
    MASTER_ADDR/PORT), each logging to log_dir/rank_R.txt, so a test can signal one rank."""
    from glm_megatron.parallel.context import free_port
    world = {"WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
             "MASTER_PORT": str(free_port())}
    return [start_pretrain(args, os.path.join(log_dir, f"rank_{rank}.txt"),
                           dict(env or {}, RANK=str(rank), LOCAL_RANK=str(rank), **world))
            for rank in range(nproc)]


def wait_for_line(log_path: str, pattern: str, process: subprocess.Popen,
                  timeout: float = 300) -> re.Match:
    """The first match of `pattern` in the log of a running process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, open(log_path).read())
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"exited ({process.returncode}) before {pattern!r}:\n"
                                 + open(log_path).read()[-3000:])
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout}s")


def processes_with_env(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (e.g. orphaned workers)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def checkpoint_files(root: str, iteration: int) -> dict:
    """Every file of one saved iteration, loaded, by relative path."""
    path = os.path.join(root, f"iter_{iteration:07d}")
    out = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            out[os.path.relpath(full, path)] = (
                torch.load(full, weights_only=False) if name.endswith(".pt") else None)
    return out


def assert_identical(a, b, where=""):
    """Equal bit for bit, through nested dicts, lists and tuples of tensors and arrays."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, numpy.ndarray):
        assert numpy.array_equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where
