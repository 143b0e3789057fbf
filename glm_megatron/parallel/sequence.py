"""Sequence-parallel communication on any device.

megatron-core's sequence-parallel mappings allocate their buffers on the current CUDA device,
so they cannot run on CPU; these two autograd functions are the device-agnostic equivalents,
built on torch.distributed's all_gather_into_tensor / reduce_scatter_tensor.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _all_gather(x: torch.Tensor, group) -> torch.Tensor:
    size = dist.get_world_size(group)
    out = torch.empty((x.shape[0] * size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.all_gather_into_tensor(out, x.contiguous(), group=group)
    return out


def _reduce_scatter(x: torch.Tensor, group) -> torch.Tensor:
    size = dist.get_world_size(group)
    out = torch.empty((x.shape[0] // size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    dist.reduce_scatter_tensor(out, x.contiguous(), group=group)
    return out


def _own_shard(x: torch.Tensor, group) -> torch.Tensor:
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    return x.chunk(size, dim=0)[rank].contiguous()


class _GatherSequence(torch.autograd.Function):
    """[s/tp, ...] -> [s, ...]; backward reduce-scatters the (partial) gradient."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _reduce_scatter(grad, ctx.group), None


class _GatherSequenceReplicatedGrad(torch.autograd.Function):
    """[s/tp, ...] -> [s, ...] for a computation every TP rank repeats identically (so its
    gradient is already complete): backward keeps this rank's shard."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _all_gather(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _own_shard(grad, ctx.group), None


class _SplitSequence(torch.autograd.Function):
    """[s, ...] (replicated) -> this rank's [s/tp, ...]; backward all-gathers."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return _own_shard(x, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, ctx.group), None


def gather_sequence(x: torch.Tensor, group, replicated_grad: bool = False) -> torch.Tensor:
    """All-gather sequence shards over the TP `group`; `replicated_grad` when every TP rank
    computes the same function of the result (a replicated head), so gradients need no
    reduction."""
    return (_GatherSequenceReplicatedGrad if replicated_grad else _GatherSequence).apply(x, group)


def split_sequence(x: torch.Tensor, group) -> torch.Tensor:
    return _SplitSequence.apply(x, group)
