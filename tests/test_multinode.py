"""A two-node launch, with two launches on this machine standing in for two nodes: through
examples/pretrain_slurm.sh under stand-ins for SLURM's srun and scontrol (each "node" runs
torchrun --nnodes 2 --node-rank i --master-addr --master-port), the run equals the same
layout launched on one node."""

from __future__ import annotations

import os
import re
import stat
import subprocess

from cli import QUICK, ROOT, run_pretrain

# srun: one task per node, all at once, each with its SLURM_NODEID; fails if any task fails.
FAKE_SRUN = """#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
    SLURM_NODEID=$node SLURM_PROCID=$node "$@" > "$FAKE_SLURM_LOGS/node$node.out" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
for ((node = 0; node < SLURM_NNODES; node++)); do echo 127.0.0.1; done
"""


def _losses(stdout: str) -> list[str]:
    return re.findall(r"lm loss: (\S+)", stdout)


def test_two_nodes_equal_one_node(tmp_path):
    from glm_megatron.parallel.context import free_port
    bin_dir, logs = tmp_path / "bin", tmp_path / "logs"
    bin_dir.mkdir()
    logs.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    extra = [*QUICK, "--train-iters", "3", "--num-workers", "0"]
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=ROOT,
               OMP_NUM_THREADS="1", FAKE_SLURM_LOGS=str(logs), SLURM_NNODES="2",
               SLURM_JOB_NODELIST="node[0-1]", SLURM_JOB_ID="42", SLURM_SUBMIT_DIR=ROOT,
               GPUS_PER_NODE="1", TP="1", MASTER_PORT=str(free_port()),
               RUN_DIR=str(tmp_path / "run"))
    result = subprocess.run(["bash", os.path.join(ROOT, "examples", "pretrain_slurm.sh"),
                             *extra], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    node0 = (logs / "node0.out").read_text()
    assert result.returncode == 0, node0[-3000:] + (logs / "node1.out").read_text()[-3000:]
    assert "layout TP=1 x PP=1 x DP=2" in node0
    assert (tmp_path / "run" / "checkpoints" / "latest_checkpointed_iteration.txt").is_file()

    one_node = run_pretrain([*extra, "--save", str(tmp_path / "one")], nproc=2)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    assert _losses(node0) == _losses(one_node.stdout) and len(_losses(node0)) == 3
