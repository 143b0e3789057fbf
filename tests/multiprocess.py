"""Run a function in N processes that form a gloo world, the way torchrun would."""

from __future__ import annotations

import os

import torch.multiprocessing as mp

from glm_megatron.parallel.context import free_port




def _entry(rank: int, world_size: int, port: int, fn, args):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    fn(*args)


def run_distributed(fn, world_size: int, *args):
    """Call fn(*args) on every rank; raises if any rank fails. fn must be importable."""
    mp.start_processes(_entry, args=(world_size, free_port(), fn, args), nprocs=world_size,
                       join=True, start_method="spawn")
