"""GLM self-attention: fused QKV grouped per query group, RoPE, SDPA.

The fused QKV weight is laid out as megatron-core lays it out, [groups, (q_per_group + 2) * hd],
so a contiguous split over TP ranks hands each rank whole query groups with their K and V.
Converters translate to the per-head-interleaved or [Q; K; V] layouts of published checkpoints.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import GLMConfig
from ..parallel.context import ParallelContext
from ..parallel.recompute import checkpoint
from .layers import ColumnParallelLinear, RowParallelLinear


def glm_attention_mask(sep: Optional[torch.Tensor], seq_len: int, device: torch.device,
                       past_length: int = 0) -> Optional[torch.Tensor]:
    """Boolean mask [b (or 1), 1, s, past + s] (True = may attend) for `seq_len` new tokens after
    `past_length` cached ones, or None for plain causal attention without a cache.

    GLM: every token sees the first `sep` tokens of its sample (Part A, bidirectional) and the
    tokens up to itself (Part B, causal).
    """
    if sep is None and past_length == 0:
        return None
    rows = torch.arange(past_length, past_length + seq_len, device=device)
    cols = torch.arange(past_length + seq_len, device=device)
    causal = (cols[None, :] <= rows[:, None])[None]
    if sep is None:
        return causal[:, None]
    return (causal | (cols[None, None, :] < sep.to(device)[:, None, None]))[:, None]


def deepnorm_qkv_stds(config: GLMConfig) -> torch.Tensor:
    """Per-row init std of the fused QKV (rows grouped per query group) under DeepNorm: Xavier
    normal for Q and K, scaled by (2N)^-1/2 for V (GLM-130B)."""
    h = config.hidden_size
    q = config.xavier_normal_std(h, config.query_projection_size, False)
    k = config.xavier_normal_std(h, config.kv_projection_size, False)
    v = config.xavier_normal_std(h, config.kv_projection_size, True)
    per_group = config.num_attention_heads // config.num_query_groups
    group = torch.tensor([q] * per_group + [k, v]).repeat_interleave(config.kv_channels)
    return group.repeat(config.num_query_groups)


class SelfAttention(torch.nn.Module):
    def __init__(self, config: GLMConfig, ctx: ParallelContext, *,
                 sequence_parallel: bool = False, recompute_core: bool = False):
        super().__init__()
        self.rng = ctx.rng
        self.head_dim = config.kv_channels
        self.queries_per_group = config.num_attention_heads // config.num_query_groups
        self.local_groups = config.num_query_groups // ctx.tp_size
        self.dropout = config.attention_dropout
        self.recompute_core = recompute_core
        qkv_size = config.query_projection_size + 2 * config.kv_projection_size
        proj_std = (config.xavier_normal_std(config.query_projection_size, config.hidden_size,
                                             True)
                    if config.deepnorm else config.output_layer_init_std)
        self.linear_qkv = ColumnParallelLinear(
            config.hidden_size, qkv_size, ctx, sequence_parallel=sequence_parallel,
            bias=config.add_bias_linear or config.add_qkv_bias,
            init_std=deepnorm_qkv_stds(config) if config.deepnorm else None)
        self.linear_proj = RowParallelLinear(
            config.query_projection_size, config.hidden_size, ctx,
            sequence_parallel=sequence_parallel, bias=config.add_bias_linear, init_std=proj_std)

    def _core_attention(self, query, key, value, mask):
        """[s, b, heads, d] in, [s, b, heads * d] out: the part selective recompute redoes."""
        seq, batch = query.shape[:2]
        query, key, value = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout = self.dropout if self.training else 0.0
        # Attention dropout acts on this rank's heads only: draw it from the per-TP-rank stream.
        with self.rng.fork() if dropout > 0 else contextlib.nullcontext():
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=mask, dropout_p=dropout, is_causal=mask is None,
                enable_gqa=self.queries_per_group > 1)
        return context.permute(2, 0, 1, 3).reshape(seq, batch, -1)

    def forward(self, hidden: torch.Tensor, rotary, rotary_tables, mask: Optional[torch.Tensor],
                kv_cache=None) -> torch.Tensor:
        """`kv_cache` (a model.kv_cache.LayerKVCache): attend over the cached tokens too, and
        add this call's keys and values to it."""
        qkv, _ = self.linear_qkv(hidden)  # under sequence parallelism: the full sequence
        seq, batch = qkv.shape[:2]
        qkv = qkv.view(seq, batch, self.local_groups, self.queries_per_group + 2, self.head_dim)
        # One split (its backward is one concatenation, where slicing would zero-fill a
        # qkv-sized gradient per piece), rotated in the grouped layout, so that the query's
        # reshape below is a view whenever RoPE made it contiguous.
        query, key, value = qkv.split([self.queries_per_group, 1, 1], dim=3)
        if rotary is not None:
            query = rotary.apply(query, rotary_tables)
            key = rotary.apply(key, rotary_tables)
        query = query.reshape(seq, batch, -1, self.head_dim)
        key, value = key.squeeze(3), value.squeeze(3)
        if kv_cache is not None:
            key, value = kv_cache.append(key, value)
        if self.recompute_core and self.training:
            context = checkpoint(self.rng, self._core_attention, query, key, value, mask)
        else:
            context = self._core_attention(query, key, value, mask)
        output, _ = self.linear_proj(context)
        return output
