"""Transformer layer and block for every GLM generation.

Residual variants are config, not subclasses: pre-norm (GLM, ChatGLM2/3, GLM-4), DeepNorm with
the residual taken from the norm output (ChatGLM-6B, GLM-130B), and GLM-4-0414's extra norms on
the sublayer outputs.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from ..config import GLMConfig
from ..parallel.context import ParallelContext
from ..parallel.recompute import checkpoint
from .attention import SelfAttention
from .layers import norm
from .mlp import MLP
from .options import ExecutionOptions


class TransformerLayer(torch.nn.Module):
    def __init__(self, config: GLMConfig, ctx: ParallelContext, options: ExecutionOptions):
        super().__init__()
        self.config = config
        sp, compiled = options.sequence_parallel, options.compile_backend is not None
        self.input_layernorm = norm(config, ctx.device, sp, compiled)
        self.self_attention = SelfAttention(
            config, ctx, sequence_parallel=sp,
            recompute_core=options.recompute_granularity == "selective")
        self.pre_mlp_layernorm = norm(config, ctx.device, sp, compiled)
        self.mlp = MLP(config, ctx, sp)
        if config.post_sublayer_norms:
            self.post_self_attn_layernorm = norm(config, ctx.device, sp, compiled)
            self.post_mlp_layernorm = norm(config, ctx.device, sp, compiled)

    def _residual_add(self, residual_in, normed_in, sublayer_out, post_norm):
        if post_norm is not None:
            sublayer_out = post_norm(sublayer_out)
        cfg = self.config
        residual = (normed_in * cfg.residual_alpha
                    if cfg.apply_residual_connection_post_layernorm else residual_in)
        return residual + F.dropout(sublayer_out, p=cfg.hidden_dropout, training=self.training)

    def forward(self, hidden, rotary, rotary_tables, mask, kv_cache=None):
        post = self.config.post_sublayer_norms
        normed = self.input_layernorm(hidden)
        attention = self.self_attention(normed, rotary, rotary_tables, mask, kv_cache)
        hidden = self._residual_add(hidden, normed, attention,
                                    self.post_self_attn_layernorm if post else None)
        normed = self.pre_mlp_layernorm(hidden)
        mlp = self.mlp(normed)
        return self._residual_add(hidden, normed, mlp, self.post_mlp_layernorm if post else None)


class TransformerBlock(torch.nn.Module):
    """A run of layers keyed by their global layer number, plus the final norm on the last stage.

    Keys are global ("0".."L-1"), so a pipeline stage's parameter names match the full model's.
    """

    def __init__(self, config: GLMConfig, ctx: ParallelContext, layer_numbers: Iterable[int],
                 final_norm: bool, options: ExecutionOptions):
        super().__init__()
        self.options, self.rng = options, ctx.rng
        self.layers = torch.nn.ModuleDict(
            {str(i): TransformerLayer(config, ctx, options) for i in layer_numbers})
        self.final_layernorm = norm(config, ctx.device, options.sequence_parallel) if final_norm else None

    def _checkpoint_groups(self) -> list[tuple[list, bool]]:
        """Runs of consecutive layers and whether each run is recomputed (full granularity):
        uniform checkpoints every chunk of recompute_num_layers layers; block checkpoints the
        first recompute_num_layers layers of this stage and keeps the rest."""
        chain = list(self.layers.values())
        opts = self.options
        if not self.training or opts.recompute_granularity != "full":
            return [(chain, False)]
        n = opts.recompute_num_layers
        if opts.recompute_method == "uniform":
            return [(chain[i:i + n], True) for i in range(0, len(chain), n)]
        return [(chain[:n], True), (chain[n:], False)]

    def forward(self, hidden, rotary, rotary_tables, mask: Optional[torch.Tensor],
                kv_cache=None):
        if kv_cache is not None:  # incremental decoding (model.kv_cache): no recomputation
            for number, layer in self.layers.items():
                hidden = layer(hidden, rotary, rotary_tables, mask, kv_cache.layer(int(number)))
            return hidden if self.final_layernorm is None else self.final_layernorm(hidden)
        for group, recompute in self._checkpoint_groups():
            def run(h, group=group):
                for layer in group:
                    h = layer(h, rotary, rotary_tables, mask)
                return h
            hidden = checkpoint(self.rng, run, hidden) if recompute and group else run(hidden)
        if self.final_layernorm is not None:
            hidden = self.final_layernorm(hidden)
        return hidden
