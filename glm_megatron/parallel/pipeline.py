"""Pipeline parallelism with torch.distributed.pipelining's schedules (1F1B and interleaved
1F1B), which run on CPU/gloo and GPU/NCCL alike; megatron-core's schedules are CUDA-only.

Every rank reads the same micro-batches from its data loader, so every stage gets what GLM
needs per micro-batch (2D position ids, sep) as keyword inputs; only hidden states travel
between stages. The last stage returns each micro-batch's loss.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from megatron.core import parallel_state as mpu
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B

from . import state


class _StageAdapter(torch.nn.Module):
    """PipelineStage calls forward(*received_activations, **batch)."""

    def __init__(self, chunk: torch.nn.Module):
        super().__init__()
        self.chunk = chunk

    def forward(self, *received, **batch):
        out = self.chunk(batch, decoder_input=received[0] if received else None)
        # Losses leave the last stage as [1] so the schedule can concatenate micro-batches.
        return out.reshape(1) if out.dim() == 0 else out


def stage_indices(pp_rank: int, pp_size: int, virtual: int) -> list[int]:
    """Model chunks of this rank: stages rank, rank + pp, ... (Megatron's interleaving)."""
    return [pp_rank + v * pp_size for v in range(virtual)]


class PipelineSchedule:
    def __init__(self, chunks: Sequence[torch.nn.Module], num_microbatches: int, virtual: int,
                 scale_loss: Callable[[torch.Tensor], torch.Tensor]):
        pp_rank, pp_size = mpu.get_pipeline_model_parallel_rank(), state.pp_size()
        group = mpu.get_pipeline_model_parallel_group()
        self.num_microbatches = num_microbatches
        self.stages = [PipelineStage(_StageAdapter(chunk), index, pp_size * virtual,
                                     state.device(), group=group)
                       for chunk, index in zip(chunks, stage_indices(pp_rank, pp_size, virtual))]
        self.is_last = any(s.is_last for s in self.stages)

        def loss_fn(output, _target):
            return scale_loss(output.sum() / num_microbatches)

        # Gradients are averaged in loss_fn; the schedules' own grad scaling would act on
        # `.grad`, which GradientBuffer has already moved into main_grad.
        if virtual == 1:
            self.schedule = Schedule1F1B(self.stages[0], num_microbatches, loss_fn=loss_fn,
                                         scale_grads=False)
        else:
            self.schedule = ScheduleInterleaved1F1B(self.stages, num_microbatches,
                                                    loss_fn=loss_fn, scale_grads=False)

    def run(self, batch: dict, train: bool) -> torch.Tensor | None:
        """Forward (and backward) of the micro-batches concatenated in `batch`; on the last
        stage the per-micro-batch losses [num_microbatches], elsewhere None."""
        # The loss is computed inside the last stage; the schedule still wants a target.
        target = batch["loss_mask"] if self.is_last else None
        run = self.schedule.step if train else self.schedule.eval
        outputs = run(target=target, **batch)
        return outputs.detach() if self.is_last and outputs is not None else None
