"""One forward-backward interface for every layout (Megatron-LM's `get_forward_backward_func`).

A `ForwardBackward` runs the forward (and, when training, backward) passes of one iteration's
micro-batches on this rank's model chunks and returns what the loss function reported. Training,
evaluation and finetuning all call it; only `get_forward_backward_func` knows whether the model
is pipelined.

The model's last stage returns its head output (per-token losses for the LM head, logits for a
classifier); `loss_fn(output, micro_batch) -> (loss, report)` turns it into the micro-batch's
scalar loss and a dict of tensors to report. Gradients are those of the mean of the
micro-batch losses (times the loss scale), accumulated by the hooks of GradientBuffer.

Pipelining uses torch.distributed.pipelining's 1F1B and interleaved 1F1B schedules, which run
on CPU/gloo and GPU/NCCL alike; with fewer micro-batches than stages, where 1F1B has no steady
state (torch's refuses it), its fill-drain (GPipe) schedule, as Megatron-LM runs that case (megatron-core's schedules are CUDA-only). Every rank reads the
same micro-batches, so every stage gets what GLM needs per micro-batch (2D position ids, sep)
as keyword inputs; only hidden states travel between stages.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch.distributed.pipelining import (PipelineStage, Schedule1F1B, ScheduleGPipe,
                                         ScheduleInterleaved1F1B)

from .context import ParallelContext, all_reduce
from .layer_split import stage_indices

LossFn = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]


@dataclass
class StepOutput:
    """What one forward-backward reported. On the last pipeline stage `losses` holds each
    micro-batch's loss and `reports` its loss_fn report; both are None on other stages."""
    losses: Optional[list[torch.Tensor]]
    reports: Optional[list[dict]]

    def mean_loss(self, ctx: ParallelContext) -> float:
        """The loss averaged over micro-batches and data-parallel ranks, on every rank."""
        value = (torch.stack(self.losses).double().mean().reshape(1) if self.losses is not None
                 else torch.zeros(1, dtype=torch.float64, device=ctx.device))
        all_reduce(value, ctx.pp_group)  # only the last stage holds it
        all_reduce(value, ctx.dp_group)
        return value.item() / ctx.dp_size

    def summed_reports(self, ctx: ParallelContext, keys: Sequence[str]) -> dict[str, float]:
        """Report entries `keys` summed over micro-batches, pipeline stages and DP ranks."""
        values = torch.zeros(len(keys), dtype=torch.float64, device=ctx.device)
        for report in self.reports or ():
            values += torch.stack([report[k].detach().double().reshape(()) for k in keys])
        all_reduce(values, ctx.pp_group)
        all_reduce(values, ctx.dp_group)
        return dict(zip(keys, values.tolist()))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class ForwardBackward(abc.ABC):
    """Forward (and backward unless `forward_only`) over `num_microbatches` micro-batches."""

    def __init__(self, ctx: ParallelContext, num_microbatches: int, loss_fn: LossFn,
                 scale_loss: Callable[[torch.Tensor], torch.Tensor]):
        self.ctx, self.num_microbatches = ctx, num_microbatches
        self.loss_fn, self.scale_loss = loss_fn, scale_loss

    @abc.abstractmethod
    def __call__(self, microbatches, *, forward_only: bool = False) -> StepOutput:
        """`microbatches`: an iterator that yields (at least) num_microbatches batches."""


class NoPipelining(ForwardBackward):
    """One stage: micro-batches run one after another on the single chunk."""

    def __init__(self, chunk: torch.nn.Module, *args):
        super().__init__(*args)
        self.chunk = chunk

    def __call__(self, microbatches, *, forward_only: bool = False) -> StepOutput:
        losses, reports = [], []
        for _ in range(self.num_microbatches):
            batch = _to_device(next(microbatches), self.ctx.device)
            with torch.no_grad() if forward_only else torch.enable_grad():
                loss, report = self.loss_fn(self.chunk(batch), batch)
            if not forward_only:
                self.scale_loss(loss / self.num_microbatches).backward()
            losses.append(loss.detach())
            reports.append(report)
        return StepOutput(losses, reports)


class _Stage(torch.nn.Module):
    """What PipelineStage calls: forward(*received_activations, **micro_batch). The last stage
    applies the loss function and keeps its report."""

    def __init__(self, chunk: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.chunk, self.loss_fn = chunk, loss_fn
        self.reports: list[dict] = []

    def forward(self, *received, **batch):
        output = self.chunk(batch, decoder_input=received[0] if received else None)
        if not self.chunk.post_process:
            return output
        loss, report = self.loss_fn(output, batch)
        self.reports.append(report)
        # Losses leave the last stage as [1] so the schedule can concatenate micro-batches.
        return loss.reshape(1)


class PipelineParallel(ForwardBackward):
    """1F1B over this rank's chunk, or interleaved 1F1B over several virtual-stage chunks."""

    def __init__(self, chunks: Sequence[torch.nn.Module], *args):
        super().__init__(*args)
        ctx, virtual = self.ctx, len(chunks)
        stages = [_Stage(chunk, self.loss_fn) for chunk in chunks]
        self.pipeline_stages = [
            PipelineStage(stage, index, ctx.pp_size * virtual, ctx.device, group=ctx.pp_group)
            for stage, index in zip(stages, stage_indices(ctx.pp_rank, ctx.pp_size, virtual))]
        self.last = next((s for s, p in zip(stages, self.pipeline_stages) if p.is_last), None)

        def schedule_loss(output, _target):
            return self.scale_loss(output.sum() / self.num_microbatches)

        # Gradients are averaged in schedule_loss; the schedules' own grad scaling would act on
        # `.grad`, which GradientBuffer has already moved into main_grad.
        if virtual == 1:
            kind = Schedule1F1B if self.num_microbatches >= ctx.pp_size else ScheduleGPipe
            self.schedule = kind(self.pipeline_stages[0], self.num_microbatches,
                                 loss_fn=schedule_loss, scale_grads=False)
        else:
            self.schedule = ScheduleInterleaved1F1B(self.pipeline_stages, self.num_microbatches,
                                                    loss_fn=schedule_loss, scale_grads=False)

    def __call__(self, microbatches, *, forward_only: bool = False) -> StepOutput:
        micro = [next(microbatches) for _ in range(self.num_microbatches)]
        batch = _to_device({k: torch.cat([m[k] for m in micro]) for k in micro[0]},
                           self.ctx.device)
        # The loss is computed inside the last stage; the schedule still wants a target (any
        # tensor split like the micro-batches: every batch has tokens, not every one a mask).
        target = batch["tokens"] if self.last is not None else None
        run = self.schedule.eval if forward_only else self.schedule.step
        outputs = run(target=target, **batch)
        if self.last is None:
            return StepOutput(None, None)
        # The schedule may first run a micro-batch through the stage to infer shapes; that
        # forward's report is not one of this step's.
        reports, self.last.reports = self.last.reports[-self.num_microbatches:], []
        return StepOutput(list(outputs.detach().unbind()), reports)


def get_forward_backward_func(chunks: Sequence[torch.nn.Module], ctx: ParallelContext, *,
                              num_microbatches: int, loss_fn: LossFn,
                              scale_loss: Callable[[torch.Tensor], torch.Tensor] = lambda x: x
                              ) -> ForwardBackward:
    args = (ctx, num_microbatches, loss_fn, scale_loss)
    if ctx.pp_size == 1:
        (chunk,) = chunks
        return NoPipelining(chunk, *args)
    return PipelineParallel(chunks, *args)
