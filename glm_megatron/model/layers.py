"""Building blocks whose tensor parallelism lives in the layer, not in the model code.

Linear layers are megatron-core's column/row-parallel layers; initialisation is done afterwards
by `parallel.sharding.initialize_parameters`, so layers are built without drawing weights.
"""

from __future__ import annotations

import torch
from megatron.core import ModelParallelConfig, tensor_parallel
from megatron.core import parallel_state as mpu

from ..config import GLMConfig
from ..parallel import state
from ..parallel.sequence import gather_sequence, split_sequence


def model_parallel_config(tp_size: int, params_dtype: torch.dtype = torch.float32,
                          sequence_parallel: bool = False) -> ModelParallelConfig:
    config = ModelParallelConfig(
        tensor_model_parallel_size=tp_size,
        # megatron-core's own sequence-parallel path allocates CUDA buffers; the layers below
        # add device-agnostic sequence-parallel communication around megatron-core's layers.
        sequence_parallel=False,
        params_dtype=params_dtype,
        use_cpu_initialization=True,  # allocate on the host, move to the device afterwards
        perform_initialization=False,  # weights are drawn by initialize_parameters
    )
    config.glm_sequence_parallel = sequence_parallel and tp_size > 1
    return config


class SequenceParallelColumn(tensor_parallel.ColumnParallelLinear):
    """Column-parallel linear that, under sequence parallelism, all-gathers its [s/tp] input
    (and reduce-scatters the input gradient, so megatron-core's own all-reduce is disabled)."""

    def __init__(self, *args, config: ModelParallelConfig, **kwargs):
        sp = config.glm_sequence_parallel
        super().__init__(*args, config=config, disable_grad_reduce=sp, **kwargs)
        self.glm_sequence_parallel = sp

    def forward(self, input_, weight=None):
        if self.glm_sequence_parallel:
            input_ = gather_sequence(input_)
        return super().forward(input_, weight)


class SequenceParallelRow(tensor_parallel.RowParallelLinear):
    """Row-parallel linear whose all-reduced output is split back to this rank's [s/tp]
    sequence shard under sequence parallelism (reduce-scatter in two steps)."""

    def __init__(self, *args, config: ModelParallelConfig, **kwargs):
        super().__init__(*args, config=config, **kwargs)
        # The bias is added before the split, to every token: its gradient is complete here,
        # unlike megatron-core's native path, which adds it to the shard.
        self.glm_sequence_parallel = config.glm_sequence_parallel

    def forward(self, input_):
        output, bias = super().forward(input_)
        if self.glm_sequence_parallel:
            output = split_sequence(output)
        return output, bias


def no_init(_weight):
    """Layers are built without drawing weights; initialize_parameters fills them."""
    return None


def mark_partitioned(weight: torch.nn.Parameter, dim: int, stride: int = 1):
    """Record how `weight` is split over TP ranks. megatron-core sets these attributes only when
    it initialises the weight itself, which we skip."""
    if not hasattr(weight, "tensor_model_parallel"):
        tensor_parallel.set_tensor_model_parallel_attributes(weight, True, dim, stride)


def column_parallel(in_features: int, out_features: int, mp: ModelParallelConfig, *, bias: bool,
                    stride: int = 1, init_std: float | None = None):
    layer = SequenceParallelColumn(
        in_features, out_features, config=mp, init_method=no_init, bias=bias,
        tp_group=mpu.get_tensor_model_parallel_group(),
        gather_output=False, stride=stride)
    mark_partitioned(layer.weight, 0, stride)
    _mark(layer, init_std)
    return layer


def row_parallel(in_features: int, out_features: int, mp: ModelParallelConfig, *, bias: bool,
                 init_std: float | None = None):
    layer = SequenceParallelRow(
        in_features, out_features, config=mp, init_method=no_init, bias=bias,
        tp_group=mpu.get_tensor_model_parallel_group(),
        input_is_parallel=True, skip_bias_add=False)
    mark_partitioned(layer.weight, 1)
    _mark(layer, init_std)
    return layer


def _mark(layer: torch.nn.Module, init_std: float | None):
    if init_std is not None:
        layer.weight.init_std = init_std
    if getattr(layer, "bias", None) is not None:
        layer.bias.init_constant = 0.0


def _norm_classes():
    """apex's fused norms on a CUDA run where apex is importable, else torch's. (On CPU apex
    only falls back to torch. Transformer Engine's norms are not used: they add an
    `_extra_state` entry per norm to the state dict, which the checkpoint and conversion
    layouts do not have.)"""
    if state.device().type == "cuda":
        try:
            from apex.normalization import FusedLayerNorm, FusedRMSNorm
            return FusedLayerNorm, FusedRMSNorm
        except ImportError:
            pass
    return torch.nn.LayerNorm, torch.nn.RMSNorm


def norm(config: GLMConfig, mp: ModelParallelConfig) -> torch.nn.Module:
    layer_norm, rms_norm = _norm_classes()
    if config.normalization == "RMSNorm":
        module = rms_norm(config.hidden_size, eps=config.norm_epsilon)
    else:
        module = layer_norm(config.hidden_size, eps=config.norm_epsilon)
        module.bias.init_constant = 0.0
    module.weight.init_constant = 1.0
    for param in module.parameters():
        # Under sequence parallelism a norm sees only this rank's tokens: its gradients are
        # partial sums that finalize_grads all-reduces over TP (as megatron-core marks them).
        param.sequence_parallel = mp.glm_sequence_parallel
    return module
