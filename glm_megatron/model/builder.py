"""Build a GLM model for this rank: choose the head and stage, draw the TP-invariant init."""

from __future__ import annotations

from typing import Optional

import torch

from ..config import ConfigError, GLMConfig
from ..parallel.context import ParallelContext
from ..parallel.layer_split import stage_indices, stage_layer_ranges
from ..parallel.sharding import initialize_parameters
from .chunks import ModelChunks
from .glm import GLMForCausalLM, GLMForSequenceClassification
from .options import ExecutionOptions
from .transformer import TransformerLayer


def build_model(config: GLMConfig, ctx: ParallelContext, seed: int, *,
                params_dtype: torch.dtype = torch.float32,
                options: ExecutionOptions = ExecutionOptions(),
                num_labels: Optional[int] = None, pad_token_id: Optional[int] = None,
                layer_numbers: Optional[range] = None, pre_process: bool = True,
                post_process: bool = True) -> torch.nn.Module:
    """A causal-LM model (or pipeline stage), or a sequence classifier when `num_labels` is
    given. Weights are drawn in fp32 from per-name seeds, so every layout starts identical."""
    config.check_tensor_parallel(ctx.tp_size)
    if options.sequence_parallel and ctx.tp_size == 1:
        raise ConfigError("--sequence-parallel needs --tensor-model-parallel-size > 1")
    if num_labels is None:
        model = GLMForCausalLM(config, ctx, options, layer_numbers, pre_process, post_process)
    else:
        model = GLMForSequenceClassification(config, ctx, num_labels, pad_token_id, options)
    initialize_parameters(model, seed, config.init_method_std, ctx.tp_rank, ctx.tp_size)
    model = model.to(device=ctx.device, dtype=params_dtype)
    if options.compile_backend is not None:
        compile_layers(model, options.compile_backend)
    return model


def compile_layers(model: torch.nn.Module, backend: str):
    """Regional compilation, as torchtitan does it: each transformer layer is compiled on its
    own (in place, `Module.compile`), the embedding, loss, communication between stages and
    recomputation boundaries stay eager. All layers run the same code, so Dynamo traces one
    layer and the others reuse its graph with their own parameters: compile time does not grow
    with depth."""
    for module in model.modules():
        if isinstance(module, TransformerLayer):
            module.compile(backend=backend)


def build_model_chunks(config: GLMConfig, ctx: ParallelContext, seed: int, *,
                       params_dtype: torch.dtype = torch.float32,
                       options: ExecutionOptions = ExecutionOptions(), virtual_stages: int = 1,
                       first_stage_layers: Optional[int] = None,
                       last_stage_layers: Optional[int] = None) -> ModelChunks:
    """This rank's pipeline chunks: one per virtual stage (stages rank, rank + pp, ...)."""
    num_stages = ctx.pp_size * virtual_stages
    ranges = stage_layer_ranges(config.num_layers, num_stages, first_stage_layers,
                                last_stage_layers)
    chunks = [build_model(config, ctx, seed, params_dtype=params_dtype, options=options,
                          layer_numbers=ranges[stage], pre_process=stage == 0,
                          post_process=stage == num_stages - 1)
              for stage in stage_indices(ctx.pp_rank, ctx.pp_size, virtual_stages)]
    return ModelChunks(chunks)
