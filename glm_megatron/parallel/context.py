"""The parallel context: which device and process groups a rank computes with, and its RNG.

One `ParallelContext` is made per run and handed to whatever communicates (layers, the gradient
buffer, the optimizer, the schedules, checkpointing); nothing reads megatron-core's
`parallel_state` globals after `initialize_distributed` has captured its groups. A context
from `single_process_context()` has no process group at all, so generation, conversion and
reference tests build and run a model without starting torch.distributed.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

from .. import quiet_device_warnings
from ..config import ConfigError
from .random import TensorParallelRNG

ProcessGroup = Optional[dist.ProcessGroup]  # None: a group of one without torch.distributed


@dataclass(frozen=True)
class ParallelLayout:
    tensor: int
    pipeline: int
    data: int

    def __str__(self):
        return f"TP={self.tensor} x PP={self.pipeline} x DP={self.data}"


@dataclass(frozen=True)
class ParallelContext:
    device: torch.device
    rank: int = 0  # global
    world_size: int = 1
    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    tp_group: ProcessGroup = None
    pp_group: ProcessGroup = None
    dp_group: ProcessGroup = None
    model_parallel_group: ProcessGroup = None  # TP x PP: every shard of one model replica
    embedding_group: ProcessGroup = None  # first and last pipeline stage (tied embeddings)
    # Dropout on tensor-parallel shards (attention heads, sequence shards) draws from this
    # per-TP-rank stream; the default generators serve replicated activations.
    rng: TensorParallelRNG = field(default=None, compare=False)

    def __post_init__(self):
        if self.rng is None:
            object.__setattr__(self, "rng", TensorParallelRNG(self.device))

    @property
    def layout(self) -> ParallelLayout:
        return ParallelLayout(self.tp_size, self.pp_size, self.dp_size)

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def single_process_context(device: str | torch.device = "cpu") -> ParallelContext:
    """One process, no torch.distributed: every group is a group of one."""
    return ParallelContext(torch.device(device))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but no CUDA device is visible; use --device cpu")
    if requested == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def check_layout(world_size: int, tensor: int, pipeline: int) -> ParallelLayout:
    if tensor < 1 or pipeline < 1 or world_size % (tensor * pipeline):
        raise ConfigError(
            f"world size {world_size} is not divisible by --tensor-model-parallel-size {tensor} x "
            f"--pipeline-model-parallel-size {pipeline}; launch a multiple of {tensor * pipeline} "
            "processes")
    return ParallelLayout(tensor, pipeline, world_size // (tensor * pipeline))


def _init_process_group(device: torch.device, timeout_minutes: float):
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(minutes=timeout_minutes)
    if "WORLD_SIZE" in os.environ:  # launched by torchrun (or an equivalent launcher)
        dist.init_process_group(backend=backend, timeout=timeout)
    else:  # a world of one on a private port; the environment is left untouched
        dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{free_port()}",
                                rank=0, world_size=1, timeout=timeout)


def initialize_distributed(tensor: int = 1, pipeline: int = 1, device_name: str = "auto",
                           timeout_minutes: float = 30) -> ParallelContext:
    """Join (or create) the default process group, build megatron-core's groups and capture
    them in a context. Without torchrun a world of one is created, so a single
    `python pretrain_glm.py` runs the same code as a cluster job."""
    from megatron.core import parallel_state as mpu

    device = resolve_device(device_name)
    quiet_device_warnings(device.type)
    layout = check_layout(int(os.environ.get("WORLD_SIZE", 1)), tensor, pipeline)
    if not dist.is_initialized():
        _init_process_group(device, timeout_minutes)
    mpu.initialize_model_parallel(tensor_model_parallel_size=tensor,
                                  pipeline_model_parallel_size=pipeline,
                                  create_gloo_process_groups=device.type == "cuda",
                                  distributed_timeout_minutes=timeout_minutes)
    return ParallelContext(
        device=device, rank=dist.get_rank(), world_size=dist.get_world_size(),
        tp_rank=mpu.get_tensor_model_parallel_rank(), tp_size=layout.tensor,
        pp_rank=mpu.get_pipeline_model_parallel_rank(), pp_size=layout.pipeline,
        dp_rank=mpu.get_data_parallel_rank(), dp_size=layout.data,
        tp_group=mpu.get_tensor_model_parallel_group(),
        pp_group=mpu.get_pipeline_model_parallel_group(),
        dp_group=mpu.get_data_parallel_group(),
        model_parallel_group=mpu.get_model_parallel_group(),
        # Middle pipeline stages belong to no embedding group (None).
        embedding_group=mpu.get_embedding_group(check_initialized=False) if pipeline > 1 else None)


def shutdown(barrier: bool = True):
    """Tear groups down in order; gloo aborts noisily at exit otherwise. `barrier=False` when
    the ranks may not all get here (a collective failed): the barrier would wait out the
    timeout a second time."""
    from megatron.core import parallel_state as mpu

    if mpu.model_parallel_is_initialized():
        mpu.destroy_model_parallel()
    if dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def group_size(group: ProcessGroup) -> int:
    return 1 if group is None else dist.get_world_size(group)


def all_reduce(tensor: torch.Tensor, group: ProcessGroup, **kwargs):
    """torch.distributed.all_reduce that is a no-op for a group of one."""
    if group is not None and dist.get_world_size(group) > 1:
        return dist.all_reduce(tensor, group=group, **kwargs)
    return None
