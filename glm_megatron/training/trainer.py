"""The training pieces around a model, assembled once: fp32 gradient buffer, mixed-precision
AdamW and the forward-backward function of one loss. Pretraining, finetuning, the tests and the
benchmarks step a `Trainer`; none of them wires the pieces by hand.

An iteration runs the micro-batches through the forward-backward function (`parallel.schedules`);
gradients accumulate in GradientBuffer and are finalised (tied-embedding, data-parallel and
sequence-parallel reductions) before the optimizer steps.
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch

from ..model.chunks import ModelChunks
from ..parallel.context import ParallelContext
from ..parallel.schedules import LossFn, StepOutput, get_forward_backward_func
from .grads import (DEFAULT_BUCKET_ELEMENTS, GradientBuffer, all_reduce_sequence_parallel_grads,
                    all_reduce_tied_embedding_grads)
from .optimizer import DynamicLossScaler, MixedPrecisionAdamW


class Trainer:
    def __init__(self, model: ModelChunks, ctx: ParallelContext, *, num_microbatches: int,
                 loss_fn: LossFn, lr: float, weight_decay: float, betas: tuple[float, float],
                 eps: float, clip_grad: float, loss_scaler: Optional[DynamicLossScaler] = None,
                 distributed_optimizer: bool = False,
                 bucket_elements: int = DEFAULT_BUCKET_ELEMENTS):
        self.model, self.ctx = model, ctx
        self.grads = GradientBuffer(list(model.parameters()), ctx.dp_group,
                                    shard_over_dp=distributed_optimizer,
                                    deferred_params=tuple(model.tied_embedding_copies()),
                                    bucket_elements=bucket_elements)
        self.optimizer = MixedPrecisionAdamW(model, self.grads, ctx, lr=lr,
                                             weight_decay=weight_decay, betas=betas, eps=eps,
                                             clip_grad=clip_grad, loss_scaler=loss_scaler)
        self.forward_backward = get_forward_backward_func(
            model.chunks, ctx, num_microbatches=num_microbatches, loss_fn=loss_fn,
            scale_loss=self.optimizer.scale_loss)

    @property
    def num_microbatches(self) -> int:
        return self.forward_backward.num_microbatches

    def finalize_grads(self):
        """Cross-stage sums first (their bucket waits for them), then the DP reduction, then
        the sequence-parallel sums over TP (identical on every DP slice)."""
        self.grads.zero_unwritten()
        copies = self.model.tied_embedding_copies()
        if copies:
            all_reduce_tied_embedding_grads(copies, self.ctx.embedding_group)
        self.grads.finish_reduction()
        all_reduce_sequence_parallel_grads(self.grads.params, self.ctx.tp_group)

    def train_step(self, batches: Iterator[dict]) -> tuple[StepOutput, bool, float]:
        """One iteration: (what the loss function reported, whether the update was applied,
        the gradient norm)."""
        self.model.train()
        self.grads.start(self.num_microbatches)
        output = self.forward_backward(batches)
        self.finalize_grads()
        applied, grad_norm = self.optimizer.step()
        return output, applied, grad_norm

    @torch.no_grad()
    def evaluate(self, batches: Iterator[dict], iterations: int) -> list[StepOutput]:
        """Forward passes over `iterations` iterations' worth of micro-batches."""
        self.model.eval()
        return [self.forward_backward(batches, forward_only=True) for _ in range(iterations)]
