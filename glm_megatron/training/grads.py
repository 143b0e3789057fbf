"""fp32 gradient accumulation and the data-parallel all-reduce, bucket by bucket.

Each parameter's gradient lives in `param.main_grad`, a view into a contiguous fp32 buffer. A
post-accumulate hook adds every fresh `.grad` into it and frees `.grad`, so micro-batches
accumulate in fp32 whatever the compute dtype. On the last micro-batch a bucket's all-reduce is
launched asynchronously as soon as all of its gradients are final, overlapping the reduction
with the rest of the backward pass (as megatron-core's DDP does on GPU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

DEFAULT_BUCKET_ELEMENTS = 40_000_000  # Megatron-LM's default bucket size


@dataclass
class _Bucket:
    data: torch.Tensor
    num_params: int
    ready: int = 0
    handle: Optional[dist.Work] = None
    params: list = field(default_factory=list)


class GradientBuffer:
    def __init__(self, params: list[torch.nn.Parameter], dp_group,
                 bucket_elements: int = DEFAULT_BUCKET_ELEMENTS):
        self.params = [p for p in params if p.requires_grad]
        self.dp_group = dp_group
        self.dp_size = dist.get_world_size(dp_group)
        device = self.params[0].device
        total = sum(p.numel() for p in self.params)
        self.buffer = torch.zeros(total, dtype=torch.float32, device=device)
        self.buckets: list[_Bucket] = []
        self._param_bucket: dict[torch.nn.Parameter, _Bucket] = {}
        # Reverse order: the backward pass produces the last layers' gradients first.
        offset, start = 0, 0
        current: list[torch.nn.Parameter] = []
        for param in reversed(self.params):
            param.main_grad = self.buffer[offset:offset + param.numel()].view_as(param)
            offset += param.numel()
            current.append(param)
            if offset - start >= bucket_elements or param is self.params[0]:
                self._add_bucket(current, start, offset)
                current, start = [], offset
        self.overlap = False
        for param in self.params:
            param.register_post_accumulate_grad_hook(self._accumulate)

    def _add_bucket(self, params, start, end):
        bucket = _Bucket(self.buffer[start:end], len(params), params=list(params))
        self.buckets.append(bucket)
        for p in params:
            self._param_bucket[p] = bucket

    def _accumulate(self, param: torch.nn.Parameter):
        param.main_grad.add_(param.grad)
        param.grad = None
        if self.overlap and self.dp_size > 1:
            bucket = self._param_bucket[param]
            bucket.ready += 1
            if bucket.ready == bucket.num_params:
                bucket.handle = dist.all_reduce(bucket.data, group=self.dp_group, async_op=True)

    def zero(self):
        self.buffer.zero_()
        for bucket in self.buckets:
            bucket.ready, bucket.handle = 0, None

    def start_last_microbatch(self):
        """From now on, launch each bucket's reduction as soon as its gradients are final."""
        self.overlap = True

    def finish_reduction(self):
        """Wait for (or run) every bucket's all-reduce and average over data-parallel ranks."""
        self.overlap = False
        if self.dp_size == 1:
            return
        for bucket in self.buckets:
            if bucket.handle is None:
                dist.all_reduce(bucket.data, group=self.dp_group)
            else:
                bucket.handle.wait()
        self.buffer.div_(self.dp_size)
