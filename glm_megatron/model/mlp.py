"""GLM MLP: GeLU (GLM, ChatGLM-6B), GeGLU (GLM-130B) or SwiGLU (ChatGLM2/3, GLM-4).

Gated variants keep fc1's rows as [activated; linear] (transformers' gate_up_proj order); fc1 is
split with stride 2 so each TP rank holds [gate_r; up_r] and gates its own slice locally.
GLM-130B computes GeGLU as x1 * gelu(x2), the activated half second, with the exact (erf) GeLU:
the same function with fc1's two halves swapped, so a GLM-130B checkpoint's dense_h_to_4h maps
to fc1 with its halves exchanged, and the glm-130b preset uses the exact GeLU (no
--openai-gelu).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import GLMConfig
from ..parallel.context import ParallelContext
from .layers import ColumnParallelLinear, RowParallelLinear


class MLP(torch.nn.Module):
    def __init__(self, config: GLMConfig, ctx: ParallelContext, sequence_parallel: bool = False):
        super().__init__()
        gated = config.gated_mlp
        self.activation = config.activation
        self.gelu_approximate = "tanh" if config.openai_gelu else "none"
        fc1_rows = config.ffn_hidden_size * (2 if gated else 1)
        deepnorm = config.deepnorm  # GLM-130B's init: Xavier normal, scaled, on the FFN
        self.linear_fc1 = ColumnParallelLinear(
            config.hidden_size, fc1_rows, ctx, sequence_parallel=sequence_parallel,
            bias=config.add_bias_linear, stride=2 if gated else 1,
            init_std=config.xavier_normal_std(config.hidden_size, fc1_rows, True)
            if deepnorm else None)
        self.linear_fc2 = RowParallelLinear(
            config.ffn_hidden_size, config.hidden_size, ctx, sequence_parallel=sequence_parallel,
            bias=config.add_bias_linear,
            init_std=config.xavier_normal_std(config.ffn_hidden_size, config.hidden_size, True)
            if deepnorm else config.output_layer_init_std)

    def _gelu(self, x):
        return F.gelu(x, approximate=self.gelu_approximate)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        intermediate, _ = self.linear_fc1(hidden)
        if self.activation == "gelu":
            intermediate = self._gelu(intermediate)
        else:
            gate, up = intermediate.chunk(2, dim=-1)
            act = F.silu if self.activation == "swiglu" else self._gelu
            intermediate = act(gate) * up
        output, _ = self.linear_fc2(intermediate)
        return output
