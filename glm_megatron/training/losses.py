"""Loss functions: a head's output and its micro-batch -> (scalar loss, report).

They are what `parallel.schedules.ForwardBackward` applies on the last pipeline stage; the
report's tensors are what a caller may want summed or collected (see StepOutput).
"""

from __future__ import annotations

import torch


def language_model_loss(token_losses: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    """The mean of per-token losses [b, s] over the tokens in `loss_mask`."""
    loss_mask = batch["loss_mask"].float()
    loss = (token_losses * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)
    return loss, {}
