"""One training iteration and one evaluation pass, independent of where batches come from.

Without pipeline parallelism micro-batches run one after another on the single chunk; with it,
they are concatenated and handed to the pipeline schedule. Either way gradients accumulate in
GradientBuffer and are finalised (DP, sequence-parallel and tied-embedding reductions) before
the optimizer steps.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state as mpu

from ..model.chunks import ModelChunks
from ..parallel import state
from ..parallel.pipeline import PipelineSchedule
from .grads import (GradientBuffer, all_reduce_sequence_parallel_grads,
                    all_reduce_tied_embedding_grads)
from .optimizer import MixedPrecisionAdamW


def to_device(batch: dict) -> dict:
    return {k: v.to(state.device(), non_blocking=True) for k, v in batch.items()}


def _concatenated(batches: Iterator[dict], count: int) -> dict:
    micro = [next(batches) for _ in range(count)]
    return to_device({k: torch.cat([m[k] for m in micro]) for k in micro[0]})


def _mean_over_data_parallel(value: Optional[torch.Tensor]) -> float:
    """The loss as the last pipeline stage computed it, averaged over DP ranks."""
    value = (value.detach().reshape(1).double() if value is not None
             else torch.zeros(1, dtype=torch.float64, device=state.device()))
    if state.pp_size() > 1:
        dist.all_reduce(value, group=mpu.get_pipeline_model_parallel_group())
    dist.all_reduce(value, group=mpu.get_data_parallel_group())
    return value.item() / state.dp_size()


def finalize_grads(model: ModelChunks, grads: GradientBuffer):
    """Cross-stage sums first (their bucket waits for them), then the DP reduction, then the
    sequence-parallel sums over TP (identical on every DP slice)."""
    grads.zero_unwritten()
    if state.pp_size() > 1:
        copies = model.tied_embedding_copies()
        if copies:
            all_reduce_tied_embedding_grads(copies, mpu.get_embedding_group())
    grads.finish_reduction()
    all_reduce_sequence_parallel_grads(grads.params, mpu.get_tensor_model_parallel_group())


def _forward_backward(model, pipeline, optimizer, batches, num_microbatches) -> Optional[torch.Tensor]:
    if pipeline is not None:
        losses = pipeline.run(_concatenated(batches, num_microbatches), train=True)
        return losses.mean() if losses is not None else None
    total = torch.zeros((), dtype=torch.float64, device=state.device())
    for _ in range(num_microbatches):
        loss = model.chunks[0](to_device(next(batches)))
        optimizer.scale_loss(loss / num_microbatches).backward()
        total += loss.detach()
    return total / num_microbatches


def train_step(model: ModelChunks, grads: GradientBuffer, optimizer: MixedPrecisionAdamW,
               batches: Iterator[dict], num_microbatches: int,
               pipeline: Optional[PipelineSchedule] = None) -> tuple[float, bool, float]:
    """Returns (loss averaged over the global batch, whether the update was applied, grad norm)."""
    model.train()
    grads.start(num_microbatches)
    loss = _forward_backward(model, pipeline, optimizer, batches, num_microbatches)
    finalize_grads(model, grads)
    applied, grad_norm = optimizer.step()
    return _mean_over_data_parallel(loss), applied, grad_norm


@torch.no_grad()
def evaluate(model: ModelChunks, batches: Iterator[dict], iterations: int, num_microbatches: int,
             pipeline: Optional[PipelineSchedule] = None) -> float:
    model.eval()
    losses = []
    for _ in range(iterations):
        if pipeline is not None:
            out = pipeline.run(_concatenated(batches, num_microbatches), train=False)
            losses.append(out.mean() if out is not None else None)
        else:
            losses.append(torch.stack([model.chunks[0](to_device(next(batches)))
                                       for _ in range(num_microbatches)]).mean())
    mean = None if losses[0] is None else torch.stack(losses).double().mean()
    return _mean_over_data_parallel(mean)
