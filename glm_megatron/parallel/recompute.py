"""Activation recomputation that reproduces every dropout mask.

torch.utils.checkpoint restores the default generators before recomputing; the per-TP-rank
generator (attention dropout) is ours, so its state is captured at forward time and swapped in
for the recomputation too.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.utils.checkpoint

from .random import TensorParallelRNG


@contextlib.contextmanager
def _tp_rng_state(rng: TensorParallelRNG, saved):
    current = rng.state_dict()
    rng.load_state_dict(saved)
    try:
        yield
    finally:
        rng.load_state_dict(current)


def _contexts(rng: TensorParallelRNG):
    return contextlib.nullcontext(), _tp_rng_state(rng, rng.state_dict())


# Under torch.compile (--compile) Dynamo would turn torch.utils.checkpoint into its own
# recomputation operator, which takes only TorchDispatchMode contexts, not the swap of the
# tensor-parallel generator above. The recomputed region runs eagerly instead: it is the
# attention core (one kernel) under selective recomputation, and whole compiled layers under
# full recomputation, where the boundary lies outside them anyway.
@torch.compiler.disable
def checkpoint(rng: TensorParallelRNG, function, *args):
    """Recompute `function(*args)` in the backward pass with the same default and
    tensor-parallel (`rng`) generator states as its forward."""
    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False,
                                             preserve_rng_state=True,
                                             context_fn=functools.partial(_contexts, rng))
