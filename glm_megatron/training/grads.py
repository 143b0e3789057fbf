"""fp32 gradient accumulation and the data-parallel reduction, bucket by bucket.

Each parameter's gradient lives in `param.main_grad`, a view into a contiguous fp32 buffer. A
post-accumulate hook adds every fresh `.grad` into it and frees `.grad`, so micro-batches
accumulate in fp32 whatever the compute dtype. The hook also counts: once every parameter of a
bucket has received all of the iteration's micro-batch gradients, the bucket's reduction is
launched asynchronously, overlapping it with the rest of the backward pass (as megatron-core's
DDP does on GPU). Counting rather than "is this the last micro-batch" keeps it correct under
any pipeline schedule.

With the distributed optimizer (ZeRO-1) each bucket is padded to a multiple of the DP size and
reduce-scattered: DP rank r keeps the average of its 1/DP slice of every bucket, the slice
whose master weights and Adam moments it owns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from ..parallel.context import all_reduce, group_size
from ..parallel.param_roles import role_of

DEFAULT_BUCKET_ELEMENTS = 40_000_000  # Megatron-LM's default bucket size


@dataclass
class Bucket:
    start: int  # in the flat buffer
    end: int
    params: list
    deferred: bool = False  # reduced only in finish_reduction, after cross-stage sums
    ready: int = 0
    handle: Optional[dist.Work] = None
    scattered: Optional[torch.Tensor] = None  # reduce-scatter output (distributed optimizer)


class GradientBuffer:
    def __init__(self, params: list[torch.nn.Parameter], dp_group, *,
                 bucket_elements: int = DEFAULT_BUCKET_ELEMENTS, shard_over_dp: bool = False,
                 deferred_params: tuple = ()):
        """`deferred_params` (tied embedding copies) get a bucket of their own that is reduced
        only after their gradients have been summed across pipeline stages."""
        deferred = [p for p in params if any(p is d for d in deferred_params)]
        self.params = [p for p in params if p.requires_grad and not any(p is d for d in deferred)]
        self.dp_group = dp_group
        self.dp_size = group_size(dp_group)
        self.dp_rank = dist.get_rank(dp_group) if dp_group is not None else 0
        self.shard_over_dp = shard_over_dp
        self.offsets: dict[torch.nn.Parameter, int] = {}
        self.buckets: list[Bucket] = []
        # Reverse order: the backward pass produces the last layers' gradients first.
        offset, current = 0, []
        for param in reversed(self.params):
            self.offsets[param] = offset
            offset += param.numel()
            current.append(param)
            if offset - self._bucket_start() >= bucket_elements or param is self.params[0]:
                offset = self._close_bucket(current, offset)
                current = []
        if deferred:
            for param in deferred:
                self.offsets[param] = offset
                offset += param.numel()
            offset = self._close_bucket(deferred, offset)
            self.buckets[-1].deferred = True
            self.params += deferred
        self.buffer = torch.zeros(offset, dtype=torch.float32, device=self.params[0].device)
        for param, start in self.offsets.items():
            param.main_grad = self.buffer[start:start + param.numel()].view_as(param)
        self._bucket_of = {p: b for b in self.buckets for p in b.params}
        self.expected_per_param = 0  # set by start(); 0 = no overlap
        # Parameters whose gradient has not arrived yet this iteration: the first one is copied
        # in (no zeroing pass over the buffer, no mixed-dtype add), the rest added.
        self._unwritten = set(self.params)
        for param in self.params:
            param.register_post_accumulate_grad_hook(self._accumulate)

    def _bucket_start(self) -> int:
        return self.buckets[-1].end if self.buckets else 0

    def _close_bucket(self, params, end: int) -> int:
        if self.shard_over_dp:  # pad so that every DP rank owns an equal slice
            end += -(end - self._bucket_start()) % self.dp_size
        self.buckets.append(Bucket(self._bucket_start(), end, list(params)))
        return end

    def owned_range(self, bucket: Bucket) -> tuple[int, int]:
        """The slice of `bucket` (flat-buffer indices) this DP rank reduces and updates."""
        if not self.shard_over_dp:
            return bucket.start, bucket.end
        size = (bucket.end - bucket.start) // self.dp_size
        start = bucket.start + self.dp_rank * size
        return start, start + size

    def _launch(self, bucket: Bucket, async_op: bool):
        data = self.buffer[bucket.start:bucket.end]
        if self.shard_over_dp:
            bucket.scattered = torch.empty(data.numel() // self.dp_size, dtype=data.dtype,
                                           device=data.device)
            return dist.reduce_scatter_tensor(bucket.scattered, data, group=self.dp_group,
                                              async_op=async_op)
        return dist.all_reduce(data, group=self.dp_group, async_op=async_op)

    def _accumulate(self, param: torch.nn.Parameter):
        if param in self._unwritten:
            param.main_grad.copy_(param.grad)
            self._unwritten.discard(param)
        else:
            param.main_grad.add_(param.grad)
        param.grad = None
        bucket = self._bucket_of[param]
        if self.expected_per_param and self.dp_size > 1 and not bucket.deferred:
            bucket.ready += 1
            if bucket.ready == len(bucket.params) * self.expected_per_param:
                bucket.handle = self._launch(bucket, async_op=True)

    def start(self, num_microbatches: int):
        """Begin an iteration of `num_microbatches` backward passes (gradients start at zero)."""
        self._unwritten = set(self.params)
        self.expected_per_param = num_microbatches
        for bucket in self.buckets:
            bucket.ready, bucket.handle, bucket.scattered = 0, None, None

    def zero_unwritten(self):
        """Zero the gradients of parameters that got none this iteration (their buckets have
        not been launched: a bucket launches only once all its gradients are in)."""
        for param in self._unwritten:
            param.main_grad.zero_()
        self._unwritten.clear()

    def finish_reduction(self):
        """Wait for (or run) every bucket's reduction and average over data-parallel ranks.
        Afterwards the owned range of each bucket holds the DP-averaged gradient."""
        self.zero_unwritten()
        self.expected_per_param = 0
        if self.dp_size == 1:
            return
        for bucket in self.buckets:
            if bucket.handle is None:
                self._launch(bucket, async_op=False)
            else:
                bucket.handle.wait()
            start, end = self.owned_range(bucket)
            if self.shard_over_dp:
                self.buffer[start:end].copy_(bucket.scattered)
            self.buffer[start:end].div_(self.dp_size)
            # Release the reduce-scatter output and the handle (gloo's holds a copy of the
            # bucket): kept to the next step, they would cost 6 bytes per parameter.
            bucket.handle, bucket.scattered = None, None


def all_reduce_sequence_parallel_grads(params: list[torch.nn.Parameter], tp_group):
    """Norms and row-parallel biases see one sequence shard per TP rank under sequence
    parallelism: their gradients are partial sums over the TP group."""
    grads = [p.main_grad for p in params if role_of(p).sequence_parallel]
    if not grads or group_size(tp_group) == 1:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce(flat, tp_group)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def all_reduce_tied_embedding_grads(word_embeddings: list[torch.nn.Parameter], embedding_group):
    """A tied head on the last pipeline stage holds a copy of the first stage's embedding:
    summing both copies' gradients keeps the copies identical (Megatron-LM's embedding group)."""
    for param in word_embeddings:
        all_reduce(param.main_grad, embedding_group)
