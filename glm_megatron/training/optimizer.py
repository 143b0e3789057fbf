"""AdamW over fp32 master weights, with gradient clipping, fp16 loss scaling and, optionally,
the distributed optimizer (ZeRO-1).

The optimizer steps "segments": contiguous fp32 pieces of parameters, each with its gradient
(a view into GradientBuffer's fp32 buffer). Without the distributed optimizer a segment is a
whole parameter (the parameter itself when the model is fp32); with it, segments are the pieces
of this DP rank's slice of every gradient bucket, views into one fp32 master shard per bucket
that is all-gathered back into the model after the step. Weight decay skips norms and biases
(every 1-D parameter).

Optimizer state is saved per parameter name as (start, end) element ranges of the flattened
parameter, so it loads at any DP size, with or without the distributed optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from ..parallel.context import ParallelContext, all_reduce
from ..parallel.param_roles import role_of
from .grads import GradientBuffer


class DynamicLossScaler:
    """fp16 loss scale: halve on overflow (after `hysteresis` overflows), double after `window`
    clean steps, never below `min_scale` (Megatron-LM's DynamicGradScaler); `dynamic=False`
    keeps the initial scale (--loss-scale).

    An overflow is the search's business while the scale can still come down. Overflows at the
    floor (the scale at `min_scale`, or a static scale) are counted: `hysteresis` of them in a
    row mean the gradients are not finite at any scale this run allows (`search_exhausted`)."""

    def __init__(self, initial: float, min_scale: float, window: int, hysteresis: int,
                 dynamic: bool = True):
        self.scale, self.min_scale, self.window = initial, min_scale, window
        self.hysteresis, self.dynamic = hysteresis, dynamic
        self._tracker, self._clean_steps = hysteresis, 0
        self.overflows_at_floor = 0

    @property
    def at_floor(self) -> bool:
        return not self.dynamic or self.scale <= self.min_scale

    @property
    def search_exhausted(self) -> bool:
        return self.overflows_at_floor >= self.hysteresis

    def update(self, found_inf: bool):
        self.overflows_at_floor = self.overflows_at_floor + 1 if found_inf and self.at_floor else 0
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
        return {"scale": self.scale, "tracker": self._tracker, "clean_steps": self._clean_steps,
                "overflows_at_floor": self.overflows_at_floor}

    def load_state_dict(self, sd):
        self.scale, self._tracker, self._clean_steps = sd["scale"], sd["tracker"], sd["clean_steps"]
        self.overflows_at_floor = sd.get("overflows_at_floor", 0)  # absent before it existed


def counts_for_norm(param: torch.Tensor, tp_rank: int) -> bool:
    """Count every parameter once in the global norm: replicated ones on TP rank 0 only, and
    tied embeddings on the first pipeline stage only."""
    role = role_of(param)
    return role.tied_copy_of is None and (role.tensor_parallel or tp_rank == 0)


@dataclass
class Segment:
    name: str
    param: torch.nn.Parameter
    start: int  # element range of param.view(-1)
    end: int
    master: torch.Tensor  # fp32, updated in place by AdamW
    grad: torch.Tensor  # fp32 view into GradientBuffer

    @property
    def decays(self) -> bool:
        return not (self.param.dim() == 1 or self.name.endswith(".bias"))


def _whole_parameter_segments(named, grads: GradientBuffer) -> list[Segment]:
    segments = []
    for name, p in named:
        master = p if p.dtype == torch.float32 else p.detach().float()
        segments.append(Segment(name, p, 0, p.numel(), master, p.main_grad))
    return segments


def _sharded_segments(named, grads: GradientBuffer) -> tuple[list[Segment], list]:
    """Pieces of this rank's slice of every bucket; returns them and, per bucket, the fp32
    master shard they are views of."""
    names = {p: n for n, p in named}
    segments, shards = [], []
    for bucket in grads.buckets:
        own_start, own_end = grads.owned_range(bucket)
        shard = torch.zeros(own_end - own_start, dtype=torch.float32, device=grads.buffer.device)
        shards.append(shard)
        for p in bucket.params:
            begin = grads.offsets[p]
            lo, hi = max(begin, own_start), min(begin + p.numel(), own_end)
            if lo >= hi:
                continue
            master = shard[lo - own_start:hi - own_start]
            master.copy_(p.detach().reshape(-1)[lo - begin:hi - begin])
            segments.append(Segment(names[p], p, lo - begin, hi - begin, master,
                                    grads.buffer[lo:hi]))
    return segments, shards


class MixedPrecisionAdamW:
    def __init__(self, model: torch.nn.Module, grads: GradientBuffer, ctx: ParallelContext, *,
                 lr: float, weight_decay: float, betas: tuple[float, float], eps: float,
                 clip_grad: float, loss_scaler: Optional[DynamicLossScaler] = None):
        self.grads, self.ctx, self.clip_grad, self.loss_scaler = grads, ctx, clip_grad, loss_scaler
        self.distributed = grads.shard_over_dp
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if self.distributed:
            self.segments, self.shards = _sharded_segments(named, grads)
        else:
            self.segments, self.shards = _whole_parameter_segments(named, grads), []
        groups = [{"params": [s.master for s in self.segments if s.decays], "wd_mult": 1.0},
                  {"params": [s.master for s in self.segments if not s.decays], "wd_mult": 0.0}]
        device = grads.buffer.device
        self.optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps,
            weight_decay=weight_decay, fused=device.type in ("cuda", "cpu"))

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.loss_scaler.scale if self.loss_scaler else loss

    def _global_grad_norm(self) -> float:
        counted = [s.grad for s in self.segments if counts_for_norm(s.param, self.ctx.tp_rank)]
        device = self.grads.buffer.device
        # Per-tensor norms in the gradients' own dtype (one fused pass, as clip_grad_norm_
        # does), then the few hundred squares summed in float64: squaring float64 copies of
        # every gradient costs a full-model allocation and a large share of the step.
        sq = (torch.stack(torch._foreach_norm(counted)).double().pow(2).sum().reshape(1)
              if counted else torch.zeros(1, dtype=torch.float64, device=device))
        if self.distributed:  # each DP rank holds a disjoint slice
            all_reduce(sq, self.ctx.dp_group)
        all_reduce(sq, self.ctx.model_parallel_group)
        return math.sqrt(sq.item()) if math.isfinite(sq.item()) else float("nan")

    @torch.no_grad()
    def step(self) -> tuple[bool, float]:
        """One update; returns (applied, grad norm). Non-finite gradients skip the update."""
        # Gradients become .grad only for the step: left on an fp32 parameter, autograd would
        # accumulate into them directly, behind GradientBuffer's hook.
        for s in self.segments:
            s.master.grad = s.grad.view_as(s.master)
        try:
            return self._step()
        finally:
            for s in self.segments:
                s.master.grad = None

    def _step(self) -> tuple[bool, float]:
        if self.loss_scaler:
            for s in self.segments:
                s.master.grad.mul_(1.0 / self.loss_scaler.scale)
        grad_norm = self._global_grad_norm()
        finite = math.isfinite(grad_norm)
        if self.loss_scaler:
            self.loss_scaler.update(found_inf=not finite)
        if not finite:
            return False, grad_norm
        if self.clip_grad > 0 and grad_norm > self.clip_grad:
            coefficient = self.clip_grad / (grad_norm + 1e-6)
            for s in self.segments:
                s.master.grad.mul_(coefficient)
        self.optimizer.step()
        self._publish()
        return True, grad_norm

    def _publish(self):
        """Copy updated master weights into the model (all-gathering the DP shards)."""
        if not self.distributed:
            for s in self.segments:
                if s.master is not s.param:
                    s.param.copy_(s.master.view_as(s.param))
            return
        dp_group = self.ctx.dp_group
        for bucket, shard in zip(self.grads.buckets, self.shards):
            # Gathered in the model's dtype: half the bytes of the fp32 masters under bf16/fp16,
            # and the same rounding as copying the masters in.
            dtype = bucket.params[0].dtype
            full = torch.empty(bucket.end - bucket.start, dtype=dtype, device=shard.device)
            dist.all_gather_into_tensor(full, shard.to(dtype), group=dp_group)
            for p in bucket.params:
                begin = self.grads.offsets[p] - bucket.start
                p.copy_(full[begin:begin + p.numel()].view_as(p))

    def masters(self) -> list[torch.Tensor]:
        """This rank's fp32 master weights (an fp32 model's own parameters)."""
        return [s.master for s in self.segments]

    # Checkpointing: per-parameter-name ranges, independent of DP size and optimizer kind.
    def state_dict(self) -> dict:
        params = {}
        for s in self.segments:
            state = self.optimizer.state.get(s.master, {})
            entry = {"start": s.start, "end": s.end}
            if s.master is not s.param:  # an fp32 model's weights are their own masters
                entry["master"] = s.master.detach().reshape(-1).clone()
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    entry[key] = state[key].reshape(-1).clone()
            params.setdefault(s.name, []).append(entry)
        steps = [float(v["step"]) for v in self.optimizer.state.values() if "step" in v]
        return {"params": params, "step": steps[0] if steps else 0.0,
                "loss_scaler": self.loss_scaler.state_dict() if self.loss_scaler else None}

    @torch.no_grad()
    def load_state_dict(self, state_dicts: list[dict]):
        """Load from the state dicts of every DP rank of the saved layout (one when it was saved
        without the distributed optimizer)."""
        pieces: dict[str, list] = {}
        for sd in state_dicts:
            for name, entries in sd["params"].items():
                pieces.setdefault(name, []).extend(entries)
        step = state_dicts[0]["step"]
        for s in self.segments:
            if s.name not in pieces:
                raise KeyError(f"optimizer state has no entry for {s.name}")
            keys = [k for k in ("master", "exp_avg", "exp_avg_sq") if k in pieces[s.name][0]]
            values = {k: _gather_range(pieces[s.name], k, s.start, s.end) for k in keys}
            if "master" in values:
                s.master.copy_(values["master"].view_as(s.master))
            else:  # saved from an fp32 model: its weights, already loaded, are the masters
                s.master.copy_(s.param.detach().reshape(-1)[s.start:s.end].view_as(s.master))
            if step > 0:
                device = s.master.device
                self.optimizer.state[s.master] = {
                    "step": torch.tensor(step, dtype=torch.float32, device=device),
                    "exp_avg": values["exp_avg"].to(device).view_as(s.master).clone(),
                    "exp_avg_sq": values["exp_avg_sq"].to(device).view_as(s.master).clone(),
                }
        if self.loss_scaler and state_dicts[0]["loss_scaler"]:
            self.loss_scaler.load_state_dict(state_dicts[0]["loss_scaler"])
        self._publish()  # the model's 16-bit weights are rounded copies of the masters


def _gather_range(entries: list[dict], key: str, start: int, end: int) -> torch.Tensor:
    """Elements [start, end) of a flattened parameter's `key` from saved (start, end) pieces."""
    out = torch.empty(end - start, dtype=torch.float32)
    covered = 0
    for e in entries:
        lo, hi = max(start, e["start"]), min(end, e["end"])
        if lo < hi:
            out[lo - start:hi - start] = e[key][lo - e["start"]:hi - e["start"]]
            covered += hi - lo
    if covered != end - start:
        raise KeyError(f"optimizer state covers {covered} of {end - start} elements")
    return out
