"""Start torch.distributed and megatron-core's process groups, on CPU (gloo) or GPU (nccl).

The device is a switch: everything after `initialize_parallel` asks `device()` and never
branches on CUDA itself.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state as mpu

from ..config import ConfigError


@dataclass(frozen=True)
class ParallelLayout:
    tensor: int
    pipeline: int
    data: int

    def __str__(self):
        return f"TP={self.tensor} x PP={self.pipeline} x DP={self.data}"


_DEVICE: torch.device | None = None


def device() -> torch.device:
    return _DEVICE if _DEVICE is not None else torch.device("cpu")


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


def initialize_parallel(tensor: int = 1, pipeline: int = 1, device_name: str = "auto",
                        timeout_minutes: int = 30) -> ParallelLayout:
    """Join (or create) the default process group and build megatron-core's groups.

    Without torchrun a world of one is created, so a single `python pretrain_glm.py` runs the
    same code as a cluster job.
    """
    global _DEVICE
    _DEVICE = resolve_device(device_name)
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    layout = check_layout(world_size, tensor, pipeline)
    if not dist.is_initialized():
        backend = "nccl" if _DEVICE.type == "cuda" else "gloo"
        if _DEVICE.type == "cuda":
            torch.cuda.set_device(_DEVICE)
        timeout = datetime.timedelta(minutes=timeout_minutes)
        if "WORLD_SIZE" in os.environ:  # launched by torchrun (or an equivalent launcher)
            dist.init_process_group(backend=backend, timeout=timeout)
        else:  # a world of one on a private port; the environment is left untouched
            dist.init_process_group(backend=backend, init_method=f"tcp://127.0.0.1:{free_port()}",
                                    rank=0, world_size=1, timeout=timeout)
    mpu.initialize_model_parallel(tensor_model_parallel_size=tensor,
                                  pipeline_model_parallel_size=pipeline,
                                  create_gloo_process_groups=_DEVICE.type == "cuda")
    return layout


def shutdown():
    """Tear groups down in order; gloo aborts noisily at exit otherwise."""
    if mpu.model_parallel_is_initialized():
        mpu.destroy_model_parallel()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def tp_rank() -> int:
    return mpu.get_tensor_model_parallel_rank()


def tp_size() -> int:
    return mpu.get_tensor_model_parallel_world_size()


def dp_rank() -> int:
    return mpu.get_data_parallel_rank()


def dp_size() -> int:
    return mpu.get_data_parallel_world_size()


def pp_rank() -> int:
    return mpu.get_pipeline_model_parallel_rank()


def pp_size() -> int:
    return mpu.get_pipeline_model_parallel_world_size()


def is_rank_zero() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0
