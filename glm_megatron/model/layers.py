"""Building blocks whose tensor parallelism lives in the layer, not in the model code.

Linear layers and the word embedding are megatron-core's tensor-parallel layers, given the
context's TP group explicitly. Two things are added around them: device-agnostic sequence
parallelism (megatron-core's own allocates CUDA buffers), and a local path for a context
without process groups (megatron-core's mappings require a group even at size one), so a
one-process model runs without torch.distributed. Layers are built without drawing weights;
`parallel.sharding.initialize_parameters` fills them from their roles.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from megatron.core import ModelParallelConfig, parallel_state, tensor_parallel

from ..config import GLMConfig
from ..parallel.context import ParallelContext
from ..parallel.param_roles import set_role
from ..parallel.sequence import gather_sequence, split_sequence


def _megatron_config(ctx: ParallelContext) -> ModelParallelConfig:
    return ModelParallelConfig(
        tensor_model_parallel_size=ctx.tp_size,
        # megatron-core's sequence-parallel path allocates CUDA buffers; the layers below add
        # device-agnostic sequence-parallel communication around megatron-core's layers.
        sequence_parallel=False,
        params_dtype=torch.float32,
        use_cpu_initialization=True,  # allocate on the host, move to the device afterwards
        perform_initialization=False,  # weights are drawn by initialize_parameters
    )


@contextlib.contextmanager
def _megatron_sees(ctx: ParallelContext):
    """megatron-core replaces a missing tp_group by its global TP group once parallel_state is
    initialized; a one-process context (no group) built in such a process, as the conversion
    schema is, must still be unsharded, so the globals are hidden while its layers are built."""
    if ctx.tp_group is not None or not parallel_state.is_initialized():
        yield
        return
    initialized = parallel_state.is_initialized
    parallel_state.is_initialized = lambda: False
    try:
        yield
    finally:
        parallel_state.is_initialized = initialized


def _no_init(_weight):
    return None


def _local_linear(x, weight, bias):
    # The same operations as megatron-core's linear, so one process rounds like a TP group of 1.
    out = torch.matmul(x, weight.t())
    return out + bias if bias is not None else out


class ColumnParallelLinear(tensor_parallel.ColumnParallelLinear):
    """Output features split over TP ranks. Under sequence parallelism the [s/tp] input is
    all-gathered (its gradient reduce-scattered, so megatron-core's all-reduce is disabled)."""

    def __init__(self, in_features: int, out_features: int, ctx: ParallelContext, *,
                 bias: bool, stride: int = 1, sequence_parallel: bool = False,
                 init_std: float | torch.Tensor | None = None, skip_weight_param_allocation: bool = False):
        with _megatron_sees(ctx):
            super().__init__(in_features, out_features, config=_megatron_config(ctx),
                             init_method=_no_init, bias=bias, gather_output=False, stride=stride,
                             tp_group=ctx.tp_group, disable_grad_reduce=sequence_parallel,
                             skip_weight_param_allocation=skip_weight_param_allocation)
        # Not `sequence_parallel`: megatron-core's forward reads that name for its own path.
        self.tp_group, self.sequence_sharded = ctx.tp_group, sequence_parallel
        if self.weight is not None:
            set_role(self.weight, partition=(0, stride), init_std=init_std)
        if self.bias is not None:
            set_role(self.bias, partition=(0, stride), init_constant=0.0)

    def forward(self, input_, weight=None):
        if self.sequence_sharded:
            input_ = gather_sequence(input_, self.tp_group)
        if self.tp_group is None:
            return _local_linear(input_, self.weight if weight is None else weight, self.bias), None
        return super().forward(input_, weight)

    def parallel_input(self, input_: torch.Tensor) -> torch.Tensor:
        """The input as this layer's own matmul sees it, for a caller that applies the weight
        itself (the fused loss): all-gathered under sequence parallelism, else replicated with
        its gradient summed over TP ranks."""
        if self.sequence_sharded:
            return gather_sequence(input_, self.tp_group)
        if self.tp_group is None:
            return input_
        return tensor_parallel.copy_to_tensor_model_parallel_region(input_, group=self.tp_group)


class RowParallelLinear(tensor_parallel.RowParallelLinear):
    """Input features split over TP ranks, output all-reduced; under sequence parallelism the
    output is split back to this rank's [s/tp] shard (reduce-scatter in two steps)."""

    def __init__(self, in_features: int, out_features: int, ctx: ParallelContext, *,
                 bias: bool, sequence_parallel: bool = False, init_std: float | torch.Tensor | None = None):
        with _megatron_sees(ctx):
            super().__init__(in_features, out_features, config=_megatron_config(ctx),
                             init_method=_no_init, bias=bias, input_is_parallel=True,
                             skip_bias_add=False, tp_group=ctx.tp_group)
        self.tp_group, self.sequence_sharded = ctx.tp_group, sequence_parallel
        set_role(self.weight, partition=(1, 1), init_std=init_std)
        if self.bias is not None:
            # Added before the split, to every token: its gradient is complete on each rank,
            # unlike megatron-core's native path, which adds it to the shard.
            set_role(self.bias, init_constant=0.0)

    def forward(self, input_):
        # megatron-core's forward for this configuration (input already split, bias added to
        # the reduced output), written out: its own passes no TP group to the matmul, which
        # then warns on rank 0, and under --compile that warning would split rank 0's graph.
        output = _local_linear(input_, self.weight, None)
        if self.tp_group is not None:
            output = tensor_parallel.reduce_from_tensor_model_parallel_region(
                output, group=self.tp_group)
        if self.bias is not None:
            output = output + self.bias
        if self.sequence_sharded:
            output = split_sequence(output, self.tp_group)
        return output, None


class VocabParallelEmbedding(tensor_parallel.VocabParallelEmbedding):
    """Vocabulary rows split over TP ranks; lookups summed over TP."""

    def __init__(self, num_embeddings: int, embedding_dim: int, ctx: ParallelContext):
        with _megatron_sees(ctx):
            super().__init__(num_embeddings, embedding_dim, init_method=_no_init,
                             config=_megatron_config(ctx), tp_group=ctx.tp_group)
        self.tp_group = ctx.tp_group
        set_role(self.weight, partition=(0, 1))

    def forward(self, input_):
        if self.tp_group is None:
            return F.embedding(input_, self.weight)
        return super().forward(input_)


def _norm_classes(device: torch.device, compiled: bool = False):
    """apex's fused norms on a CUDA run where apex is importable, else torch's. (On CPU apex
    only falls back to torch. In a compiled layer torch's norms let inductor fuse the norm with
    the residual add around it, where apex's kernel, opaque to Dynamo, would split the graph.
    Transformer Engine's norms are not used: they add an `_extra_state` entry per norm to the
    state dict, which the checkpoint and conversion layouts do not have, and run outside
    torch.compile.)"""
    if device.type == "cuda" and not compiled:
        try:
            from apex.normalization import FusedLayerNorm, FusedRMSNorm
            return FusedLayerNorm, FusedRMSNorm
        except ImportError:
            pass
    return torch.nn.LayerNorm, torch.nn.RMSNorm


def norm(config: GLMConfig, device: torch.device, sequence_parallel: bool = False,
         compiled: bool = False) -> torch.nn.Module:
    """The config's norm; `compiled`: it runs inside a torch.compile'd layer."""
    layer_norm, rms_norm = _norm_classes(device, compiled)
    if config.normalization == "RMSNorm":
        module = rms_norm(config.hidden_size, eps=config.norm_epsilon)
    else:
        module = layer_norm(config.hidden_size, eps=config.norm_epsilon)
        set_role(module.bias, init_constant=0.0)
    set_role(module.weight, init_constant=1.0)
    for param in module.parameters():
        # Under sequence parallelism a norm sees only this rank's tokens: its gradients are
        # partial sums that finalize_grads all-reduces over TP (as megatron-core marks them).
        set_role(param, sequence_parallel=sequence_parallel)
    return module
