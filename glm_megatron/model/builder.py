"""Build a GLM model for this rank: choose the head, draw the TP-invariant init, place it."""

from __future__ import annotations

from typing import Optional

import torch

from ..config import GLMConfig
from ..parallel import state
from ..parallel.sharding import initialize_parameters
from .glm import GLMForCausalLM, GLMForSequenceClassification
from .layers import model_parallel_config


def build_model(config: GLMConfig, seed: int, *, params_dtype: torch.dtype = torch.float32,
                num_labels: Optional[int] = None, pad_token_id: Optional[int] = None,
                sequence_parallel: bool = False) -> torch.nn.Module:
    """A causal-LM model, or a sequence classifier when `num_labels` is given."""
    tp_size, tp_rank = state.tp_size(), state.tp_rank()
    config.check_tensor_parallel(tp_size)
    mp = model_parallel_config(tp_size, torch.float32, sequence_parallel)
    if num_labels is None:
        model = GLMForCausalLM(config, mp, tp_size)
    else:
        model = GLMForSequenceClassification(config, mp, tp_size, num_labels, pad_token_id)
    initialize_parameters(model, seed, config.init_method_std, tp_rank, tp_size)
    return model.to(device=state.device(), dtype=params_dtype)
