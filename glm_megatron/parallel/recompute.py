"""Activation recomputation that reproduces every dropout mask.

torch.utils.checkpoint restores the default generators before recomputing; the per-TP-rank
generator (attention dropout) is ours, so its state is captured at forward time and swapped in
for the recomputation too.
"""

from __future__ import annotations

import contextlib

import torch.utils.checkpoint

from .random import tensor_parallel_rng


@contextlib.contextmanager
def _tp_rng_state(saved):
    rng = tensor_parallel_rng()
    current = rng.state_dict()
    rng.load_state_dict(saved)
    try:
        yield
    finally:
        rng.load_state_dict(current)


def _contexts():
    saved = tensor_parallel_rng().state_dict()
    return contextlib.nullcontext(), _tp_rng_state(saved)


def checkpoint(function, *args):
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False,
                                             preserve_rng_state=True, context_fn=_contexts)
