"""How a tensor-parallel parameter maps to its full tensor, in both directions.

A sharded parameter's role records its `partition` (dim, stride). A stride of s means the full
dimension is s equal blocks (e.g. SwiGLU's [gate; up]) and every rank holds its 1/tp slice of
each block, so the local tensor is [gate_r; up_r]. One rule serves initialisation (same full
weights at any TP size), checkpoint resharding and HF conversion.
"""

from __future__ import annotations

import zlib
from typing import Sequence

import torch
import torch.distributed as dist

from .param_roles import role_of


def shard(full: torch.Tensor, dim: int, stride: int, rank: int, size: int) -> torch.Tensor:
    blocks = full.chunk(stride, dim=dim)
    return torch.cat([block.chunk(size, dim=dim)[rank] for block in blocks], dim=dim).contiguous()


def unshard(shards: Sequence[torch.Tensor], dim: int, stride: int) -> torch.Tensor:
    per_rank_blocks = [s.chunk(stride, dim=dim) for s in shards]
    return torch.cat([torch.cat([blocks[i] for blocks in per_rank_blocks], dim=dim)
                      for i in range(stride)], dim=dim)


def full_shape(param: torch.Tensor, tp_size: int) -> tuple[int, ...]:
    spec = role_of(param).partition
    shape = list(param.shape)
    if spec is not None:
        shape[spec[0]] *= tp_size
    return tuple(shape)


def _generator(seed: int, name: str) -> torch.Generator:
    # Seeded by the parameter's name, so the full weight does not depend on construction
    # order, tensor- or pipeline-parallel layout.
    return torch.Generator().manual_seed((seed << 32) ^ zlib.crc32(name.encode()))


@torch.no_grad()
def initialize_parameters(model: torch.nn.Module, seed: int, default_std: float,
                          tp_rank: int, tp_size: int):
    """Fill every parameter with the same full values a single-process run would draw.

    Biases start at zero, norm weights at one, everything else ~ N(0, std) where std is the
    role's `init_std` (a number, or one per row of the full tensor) or `default_std`.
    """
    for name, param in model.named_parameters():
        role = role_of(param)
        if role.init_constant is not None:
            param.fill_(role.init_constant)
            continue
        std = role.init_std if role.init_std is not None else default_std
        full = torch.empty(full_shape(param, tp_size), dtype=torch.float32)
        # A tied copy (the head on the last pipeline stage) draws its original's values.
        generator = _generator(seed, role.tied_copy_of or name)
        if isinstance(std, torch.Tensor):  # one std per row of the full tensor (DeepNorm's QKV)
            full.normal_(0.0, 1.0, generator=generator).mul_(std.view(-1, *[1] * (full.dim() - 1)))
        else:
            full.normal_(0.0, std, generator=generator)
        spec = role.partition
        local = full if spec is None else shard(full, spec[0], spec[1], tp_rank, tp_size)
        param.copy_(local)


def gather_full(tensor: torch.Tensor, param: torch.Tensor, group) -> torch.Tensor:
    """The full tensor from every TP rank's `tensor` (a shard laid out like `param`)."""
    spec = role_of(param).partition
    if spec is None or group is None:
        return tensor
    shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
    dist.all_gather(shards, tensor.contiguous(), group=group)
    return unshard(shards, spec[0], spec[1])
