"""Sequence-parallel communication on any device.

megatron-core's sequence-parallel mappings allocate their buffers on the current CUDA device,
so they cannot run on CPU; these are the device-agnostic equivalents,
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


class _SequenceCollective(torch.autograd.Function):
    """`forward_op` on the input, `backward_op` on its gradient (each: (tensor, group) -> tensor)."""

    @staticmethod
    def forward(ctx, x, group, forward_op, backward_op):
        ctx.group, ctx.backward_op = group, backward_op
        return forward_op(x, group)

    @staticmethod
    def backward(ctx, grad):
        return ctx.backward_op(grad, ctx.group), None, None, None


def gather_sequence(x: torch.Tensor, group, replicated_grad: bool = False) -> torch.Tensor:
    """All-gather sequence shards over the TP `group` ([s/tp, ...] -> [s, ...]); the backward
    reduce-scatters the partial gradients, or, with `replicated_grad` (every TP rank computes the
    same function of the result, as a replicated head does, so the gradient is already whole),
    keeps this rank's shard."""
    return _SequenceCollective.apply(x, group, _all_gather,
                                     _own_shard if replicated_grad else _reduce_scatter)


def split_sequence(x: torch.Tensor, group) -> torch.Tensor:
    """This rank's [s/tp, ...] shard of a replicated [s, ...]; the backward all-gathers."""
    return _SequenceCollective.apply(x, group, _own_shard, _all_gather)
