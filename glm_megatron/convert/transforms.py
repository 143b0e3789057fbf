"""Named tensor transforms between our layout and published ones, each with its exact inverse.

All of them only reorder rows, so conversions are bit-exact both ways, and all of them work on
`meta` tensors, which is how the converters learn every output name and shape before reading a
single weight. Rows are the first dimension, so one transform serves a weight [rows, H] and its
bias [rows].

Our fused QKV (megatron-core) is grouped per query group: for each group g, its nh/ng query heads,
then the group's key head, then its value head. Published layouts:
- transformers `glm`: separate q_proj / k_proj / v_proj.
- ChatGLM2/3 with multi_query_attention, GLM (glm-10b): one fused tensor [Q_all; K_all; V_all].
- ChatGLM2/3 without it, ChatGLM-6B: per-head interleaved [q_0, k_0, v_0, q_1, ...], which is the
  grouped layout itself when every head is its own group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import GLMConfig
from .errors import ConversionError

Tensors = list[torch.Tensor]


def split_grouped_qkv(fused: torch.Tensor, cfg: GLMConfig) -> Tensors:
    """Our grouped QKV rows -> [Q (nh*hd rows), K (ng*hd), V (ng*hd)], heads in order."""
    nh, ng, hd = cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels
    per_group, rest = nh // ng, fused.shape[1:]
    grouped = fused.reshape(ng, per_group + 2, hd, *rest)
    return [grouped[:, :per_group].reshape(nh * hd, *rest),
            grouped[:, per_group].reshape(ng * hd, *rest),
            grouped[:, per_group + 1].reshape(ng * hd, *rest)]


def regroup_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: GLMConfig) -> torch.Tensor:
    """[Q, K, V] -> our grouped rows: each query group's heads followed by its K and V head."""
    nh, ng, hd = cfg.num_attention_heads, cfg.num_query_groups, cfg.kv_channels
    rest = q.shape[1:]
    return torch.cat([q.reshape(ng, nh // ng, hd, *rest), k.reshape(ng, 1, hd, *rest),
                      v.reshape(ng, 1, hd, *rest)], dim=1).reshape(-1, *rest)


@dataclass(frozen=True)
class Transform:
    """ours -> hf and hf -> ours, for one mapping rule's tensors (lists, in the rule's order)."""
    name: str
    to_hf: Callable[[Tensors, GLMConfig], Tensors]
    from_hf: Callable[[Tensors, GLMConfig], Tensors]


def _copy(tensors: Tensors, _cfg) -> Tensors:
    return list(tensors)


def _fused_contiguous_to_hf(tensors: Tensors, cfg: GLMConfig) -> Tensors:
    return [torch.cat(split_grouped_qkv(tensors[0], cfg), dim=0)]


def _fused_contiguous_from_hf(tensors: Tensors, cfg: GLMConfig) -> Tensors:
    q_rows, kv_rows = cfg.query_projection_size, cfg.kv_projection_size
    q, k, v = tensors[0].split([q_rows, kv_rows, kv_rows], dim=0)
    return [regroup_qkv(q, k, v, cfg)]


def _per_head(tensors: Tensors, cfg: GLMConfig) -> Tensors:
    if cfg.num_query_groups != cfg.num_attention_heads:
        raise ConversionError(
            f"a per-head interleaved QKV layout needs one key/value head per query head, but the "
            f"model has {cfg.num_attention_heads} heads in {cfg.num_query_groups} groups; use a "
            "layout with multi-query attention")
    return list(tensors)


IDENTITY = Transform("identity", _copy, _copy)
# our grouped QKV <-> q_proj, k_proj, v_proj
SPLIT_QKV = Transform("split_qkv", lambda t, c: split_grouped_qkv(t[0], c),
                      lambda t, c: [regroup_qkv(t[0], t[1], t[2], c)])
# our grouped QKV <-> one fused [Q_all; K_all; V_all]
FUSED_QKV_CONTIGUOUS = Transform("fused_qkv_contiguous", _fused_contiguous_to_hf,
                                 _fused_contiguous_from_hf)
# our grouped QKV <-> one fused per-head interleaved [q_h; k_h; v_h] (multi-head attention only)
FUSED_QKV_PER_HEAD = Transform("fused_qkv_per_head", _per_head, _per_head)
