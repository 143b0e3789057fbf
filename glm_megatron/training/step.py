"""One training iteration and one evaluation pass, independent of where batches come from."""

from __future__ import annotations

from typing import Iterator

import torch
import torch.distributed as dist
from megatron.core import parallel_state as mpu

from ..parallel import state
from .grads import GradientBuffer
from .optimizer import MixedPrecisionAdamW


def to_device(batch: dict) -> dict:
    return {k: v.to(state.device(), non_blocking=True) for k, v in batch.items()}


def _data_parallel_mean(value: torch.Tensor) -> float:
    value = value.detach().reshape(1).double()
    dist.all_reduce(value, group=mpu.get_data_parallel_group())
    return value.item() / mpu.get_data_parallel_world_size()


def train_step(model: torch.nn.Module, grads: GradientBuffer, optimizer: MixedPrecisionAdamW,
               batches: Iterator[dict], num_microbatches: int) -> tuple[float, bool, float]:
    """Accumulate `num_microbatches` micro-batches, reduce over DP, step.

    Returns (loss averaged over the global batch, whether the update was applied, grad norm).
    """
    model.train()
    grads.zero()
    total = torch.zeros((), dtype=torch.float64, device=state.device())
    for index in range(num_microbatches):
        batch = to_device(next(batches))
        if index == num_microbatches - 1:
            grads.start_last_microbatch()
        loss = model(batch)
        optimizer.scale_loss(loss / num_microbatches).backward()
        total += loss.detach()
    grads.finish_reduction()
    applied, grad_norm = optimizer.step()
    return _data_parallel_mean(total / num_microbatches), applied, grad_norm


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterator[dict], iterations: int,
             num_microbatches: int) -> float:
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=state.device())
    for _ in range(iterations * num_microbatches):
        total += model(to_device(next(batches))).detach()
    return _data_parallel_mean(total / (iterations * num_microbatches))
