"""Device-agnostic parallel RNG, the CPU-capable counterpart of megatron-core's CUDA tracker.

Dropout outside tensor-parallel regions must draw the same mask on every TP rank (activations
are replicated there); dropout on sharded activations (attention probabilities of this rank's
heads) must differ across TP ranks. The default generator serves the first; a context's
`TensorParallelRNG` swaps in a second, per-TP-rank generator state for the second, as
Megatron-LM does on CUDA.
"""

from __future__ import annotations

import contextlib
import random
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .context import ParallelContext

# Megatron-LM's offsets: the TP-region seed is seed + 2718 + tp_rank, stages differ by 100.
_TP_SEED_OFFSET = 2718
_PP_SEED_STRIDE = 100


def _get_state(dev: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(dev) if dev.type == "cuda" else torch.get_rng_state()


def _set_state(dev: torch.device, rng_state: torch.Tensor):
    if dev.type == "cuda":
        torch.cuda.set_rng_state(rng_state, dev)
    else:
        torch.set_rng_state(rng_state)


class TensorParallelRNG:
    """A second generator state on `device`, swapped in by `fork()`."""

    def __init__(self, device: torch.device):
        self.device = device
        self._state: torch.Tensor | None = None

    def seed(self, seed: int):
        saved = _get_state(self.device)
        torch.manual_seed(seed) if self.device.type == "cpu" else torch.cuda.manual_seed(seed)
        self._state = _get_state(self.device)
        _set_state(self.device, saved)

    @contextlib.contextmanager
    def fork(self):
        if self._state is None:
            raise RuntimeError("tensor-parallel dropout before seed_all(ctx, seed) was called")
        saved = _get_state(self.device)
        _set_state(self.device, self._state)
        try:
            yield
        finally:
            self._state = _get_state(self.device)
            _set_state(self.device, saved)

    def state_dict(self):
        return {"state": self._state}

    def load_state_dict(self, sd):
        self._state = sd["state"]


def seed_all(ctx: "ParallelContext", seed: int):
    """Seed every generator a rank uses, from the run seed and the rank's place in the layout."""
    stage_seed = seed + _PP_SEED_STRIDE * ctx.pp_rank
    random.seed(stage_seed)
    np.random.seed(stage_seed)
    torch.manual_seed(stage_seed)
    if ctx.device.type == "cuda":
        torch.cuda.manual_seed(stage_seed)
    ctx.rng.seed(stage_seed + _TP_SEED_OFFSET + ctx.tp_rank)


def rng_state_dict(ctx: "ParallelContext") -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "device": _get_state(ctx.device) if ctx.device.type == "cuda" else None,
        "tensor_parallel": ctx.rng.state_dict(),
    }


def load_rng_state_dict(ctx: "ParallelContext", sd: dict):
    random.setstate(sd["python"])
    np.random.set_state(sd["numpy"])
    torch.set_rng_state(sd["torch"])
    if sd["device"] is not None and ctx.device.type == "cuda":
        _set_state(ctx.device, sd["device"])
    ctx.rng.load_state_dict(sd["tensor_parallel"])
