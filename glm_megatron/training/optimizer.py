"""AdamW over fp32 master weights, with gradient clipping and fp16 loss scaling.

Model weights may be fp32, bf16 or fp16; the optimizer always steps fp32 master copies (the
weights themselves when the model is fp32) using the fp32 `main_grad`s of `GradientBuffer`.
Weight decay skips norms and biases (every 1-D parameter).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state as mpu


class DynamicLossScaler:
    """fp16 loss scale: halve on overflow (after `hysteresis` overflows), double after `window`
    clean steps, never below `min_scale` (Megatron-LM's DynamicGradScaler)."""

    def __init__(self, initial: float, min_scale: float, window: int, hysteresis: int,
                 dynamic: bool = True):
        self.scale, self.min_scale, self.window = initial, min_scale, window
        self.hysteresis, self.dynamic = hysteresis, dynamic
        self._tracker, self._clean_steps = hysteresis, 0

    def update(self, found_inf: bool):
        if not self.dynamic:
            return
        if found_inf:
            self._clean_steps = 0
            self._tracker -= 1
            if self._tracker <= 0:
                self.scale = max(self.scale / 2.0, self.min_scale)
        else:
            self._clean_steps += 1
            if self._clean_steps == self.window:
                self._clean_steps, self._tracker = 0, self.hysteresis
                self.scale *= 2.0

    def state_dict(self):
        return {"scale": self.scale, "tracker": self._tracker, "clean_steps": self._clean_steps}

    def load_state_dict(self, sd):
        self.scale, self._tracker, self._clean_steps = sd["scale"], sd["tracker"], sd["clean_steps"]


def _is_no_decay(name: str, param: torch.Tensor) -> bool:
    return param.dim() == 1 or name.endswith(".bias")


def _counts_for_norm(param: torch.Tensor) -> bool:
    """Replicated parameters are counted on TP rank 0 only, so the norm counts each once."""
    return getattr(param, "tensor_model_parallel", False) or mpu.get_tensor_model_parallel_rank() == 0


class MixedPrecisionAdamW:
    def __init__(self, model: torch.nn.Module, *, lr: float, weight_decay: float,
                 betas: tuple[float, float], eps: float, clip_grad: float,
                 loss_scaler: Optional[DynamicLossScaler] = None):
        self.clip_grad = clip_grad
        self.loss_scaler = loss_scaler
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.model_params = [p for _, p in named]
        self.master_params = [p if p.dtype == torch.float32 else
                              p.detach().float().requires_grad_() for p in self.model_params]
        groups = {True: [], False: []}
        for (name, p), master in zip(named, self.master_params):
            groups[_is_no_decay(name, p)].append(master)
        param_groups = [{"params": groups[False], "wd_mult": 1.0},
                        {"params": groups[True], "wd_mult": 0.0}]
        param_groups = [g for g in param_groups if g["params"]]
        device = self.model_params[0].device
        fused = device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps,
                                           weight_decay=weight_decay, fused=fused)

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.loss_scaler.scale if self.loss_scaler else loss

    def _global_grad_norm(self) -> float:
        grads = [m.grad for m, p in zip(self.master_params, self.model_params)
                 if _counts_for_norm(p)]
        device = self.master_params[0].device
        sq = (torch.stack([g.pow(2).sum() for g in grads]).sum() if grads
              else torch.zeros((), device=device))
        sq = sq.reshape(1).double()
        dist.all_reduce(sq, group=mpu.get_model_parallel_group())
        return math.sqrt(sq.item()) if math.isfinite(sq.item()) else float("nan")

    @torch.no_grad()
    def step(self) -> tuple[bool, float]:
        """One update; returns (applied, grad norm). Non-finite gradients skip the update."""
        # The fp32 gradient views become .grad only for the step: left in place, autograd
        # would accumulate into them directly, behind GradientBuffer's hook.
        for model_param, master in zip(self.model_params, self.master_params):
            master.grad = model_param.main_grad
        try:
            return self._step()
        finally:
            for master in self.master_params:
                master.grad = None

    def _step(self) -> tuple[bool, float]:
        if self.loss_scaler:
            for master in self.master_params:
                master.grad.mul_(1.0 / self.loss_scaler.scale)
        grad_norm = self._global_grad_norm()
        finite = math.isfinite(grad_norm)
        if self.loss_scaler:
            self.loss_scaler.update(found_inf=not finite)
        if not finite:
            return False, grad_norm
        if self.clip_grad > 0 and grad_norm > self.clip_grad:
            coefficient = self.clip_grad / (grad_norm + 1e-6)
            for master in self.master_params:
                master.grad.mul_(coefficient)
        self.optimizer.step()
        for model_param, master in zip(self.model_params, self.master_params):
            if model_param is not master:
                model_param.copy_(master)
        return True, grad_norm

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "master_params": [m.detach().clone() for m, p in
                              zip(self.master_params, self.model_params) if m is not p],
            "loss_scaler": self.loss_scaler.state_dict() if self.loss_scaler else None,
        }

    @torch.no_grad()
    def load_state_dict(self, sd: dict):
        self.optimizer.load_state_dict(sd["optimizer"])
        masters = iter(sd["master_params"])
        for model_param, master in zip(self.model_params, self.master_params):
            if model_param is not master:
                master.copy_(next(masters))
        if self.loss_scaler and sd["loss_scaler"]:
            self.loss_scaler.load_state_dict(sd["loss_scaler"])
