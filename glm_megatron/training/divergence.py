"""Divergence: when an iteration's loss or gradients mean the run cannot go on
(Megatron-LM's --check-for-nan-in-loss-and-grad).

Every rank sees the same loss (averaged over the data-parallel ranks and taken from the last
pipeline stage) and the same gradient norm (summed over all ranks), so every rank reaches the
same verdict at the same iteration without a further collective.

- A non-finite loss stops the run: the forward pass does not depend on the loss scale, so no
  precision explains it.
- Without loss scaling (fp32, bf16) non-finite gradients stop it too.
- Under fp16, overflowing gradients are expected while the dynamic loss scale comes down: such
  steps are skipped. The run stops once the scale has nowhere to go (see
  DynamicLossScaler.search_exhausted), or when every gradient is zero, which in fp16 means a
  loss scale so small that the gradients underflow.
"""

from __future__ import annotations

import math
from typing import Optional

from .optimizer import DynamicLossScaler


class TrainingDiverged(RuntimeError):
    """The run stopped because it cannot train on; the message is one line that names the
    iteration, the cause and the last good checkpoint."""


def divergence(loss: float, grad_norm: float,
               loss_scaler: Optional[DynamicLossScaler]) -> Optional[str]:
    """Why this iteration ends the run, or None when it does not. Call after the optimizer
    step (which updates the loss scaler)."""
    if not math.isfinite(loss):
        return f"the loss is {loss}: training diverged"
    if loss_scaler is None:
        return (None if math.isfinite(grad_norm) else
                f"the gradient norm is {grad_norm}: training diverged")
    if not math.isfinite(grad_norm):
        if not loss_scaler.search_exhausted:
            return None  # skipped; the loss scale comes down
        floor = ("the static --loss-scale" if not loss_scaler.dynamic else "--min-loss-scale")
        return (f"the fp16 gradients overflowed in {loss_scaler.overflows_at_floor} iterations "
                f"in a row at loss scale {loss_scaler.scale:g} ({floor}), which cannot be "
                "lowered further: training diverged")
    if grad_norm == 0.0:
        return (f"every gradient is zero (loss scale {loss_scaler.scale:g} makes the fp16 "
                "gradients underflow: raise --loss-scale or --min-loss-scale)")
    return None
