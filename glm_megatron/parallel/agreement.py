"""Failing together: a check or a file operation that one rank can fail alone (its own
checkpoint file is damaged, its disk is full) must stop every rank at the same point, or the
others wait in the next collective until the distributed timeout."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch.distributed as dist

from .context import ParallelContext


@contextlib.contextmanager
def raised_together(ctx: ParallelContext, kinds: tuple = (ValueError,)) -> Iterator[None]:
    """Run the block on every rank, then exchange outcomes (an all-gather over all ranks,
    which also synchronises them): when the block raised one of `kinds` on any rank, every rank
    raises the lowest such rank's error. The block itself must not communicate."""
    error = None
    try:
        yield
    except kinds as raised:
        error = raised
    if ctx.world_size > 1:
        errors = [None] * ctx.world_size
        dist.all_gather_object(errors, error)
        error = next((e for e in errors if e is not None), None)
    if error is not None:
        raise error
