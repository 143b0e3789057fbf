"""Our model's parameters as data: full shapes and tensor-parallel split of every name, derived
from a GLMConfig alone (no model is built).

Import and resharding use it to write checkpoints that `load_state_dict(strict=True)` accepts at
any layout; export uses it to check that a checkpoint agrees with its own config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..config import GLMConfig

WORD_EMBEDDINGS = "embedding.word_embeddings.weight"
OUTPUT_LAYER = "output_layer.weight"
SCORE = "score.weight"
LAYER_PREFIX = "decoder.layers.{i}."

# megatron-core's linear layers carry an `_extra_state` entry (None) in their state dict.
EXTRA_STATE = "._extra_state"

COLUMN = (0, 1)
ROW = (1, 1)


@dataclass(frozen=True)
class Param:
    shape: tuple[int, ...]
    partition: Optional[tuple[int, int]]  # (dim, stride) over TP ranks; None = replicated


@dataclass(frozen=True)
class Head:
    """What sits on top of the decoder: the LM head, or a classifier with `num_labels`."""
    num_labels: Optional[int] = None

    @property
    def is_classifier(self) -> bool:
        return self.num_labels is not None


def _norm(cfg: GLMConfig, prefix: str) -> dict[str, Param]:
    out = {prefix + ".weight": Param((cfg.hidden_size,), None)}
    if cfg.normalization == "LayerNorm":
        out[prefix + ".bias"] = Param((cfg.hidden_size,), None)
    return out


def pre_params(cfg: GLMConfig) -> dict[str, Param]:
    """Parameters of the first pipeline stage outside the layers (the embedding)."""
    h = cfg.hidden_size
    out = {WORD_EMBEDDINGS: Param((cfg.vocab_size, h), COLUMN)}
    if cfg.position_embedding_type == "learned_absolute":
        out["embedding.position_embeddings.weight"] = Param((cfg.max_position_embeddings, h), None)
        if cfg.block_position_encoding:
            out["embedding.block_position_embeddings.weight"] = Param(
                (cfg.max_position_embeddings, h), None)
    return out


def layer_params(cfg: GLMConfig, i: int) -> dict[str, Param]:
    h, p = cfg.hidden_size, LAYER_PREFIX.format(i=i)
    qkv_rows = cfg.query_projection_size + 2 * cfg.kv_projection_size
    fc1_rows = cfg.ffn_hidden_size * (2 if cfg.gated_mlp else 1)
    fc1_split = (0, 2 if cfg.gated_mlp else 1)
    out = _norm(cfg, p + "input_layernorm")
    out[p + "self_attention.linear_qkv.weight"] = Param((qkv_rows, h), COLUMN)
    if cfg.add_bias_linear or cfg.add_qkv_bias:
        out[p + "self_attention.linear_qkv.bias"] = Param((qkv_rows,), COLUMN)
    out[p + "self_attention.linear_proj.weight"] = Param((h, cfg.query_projection_size), ROW)
    if cfg.add_bias_linear:
        out[p + "self_attention.linear_proj.bias"] = Param((h,), None)
    out.update(_norm(cfg, p + "pre_mlp_layernorm"))
    out[p + "mlp.linear_fc1.weight"] = Param((fc1_rows, h), fc1_split)
    if cfg.add_bias_linear:
        out[p + "mlp.linear_fc1.bias"] = Param((fc1_rows,), fc1_split)
    out[p + "mlp.linear_fc2.weight"] = Param((h, cfg.ffn_hidden_size), ROW)
    if cfg.add_bias_linear:
        out[p + "mlp.linear_fc2.bias"] = Param((h,), None)
    if cfg.post_sublayer_norms:
        out.update(_norm(cfg, p + "post_self_attn_layernorm"))
        out.update(_norm(cfg, p + "post_mlp_layernorm"))
    return out


def post_params(cfg: GLMConfig, head: Head, *, holds_embedding: bool = True) -> dict[str, Param]:
    """Parameters of the last stage outside the layers. A tied LM head on a stage without the
    embedding keeps a copy of the word embeddings as `output_layer.weight` (Megatron-LM)."""
    out = _norm(cfg, "decoder.final_layernorm")
    if head.is_classifier:
        out[SCORE] = Param((head.num_labels, cfg.hidden_size), None)
    elif cfg.untie_embeddings_and_output_weights or not holds_embedding:
        out[OUTPUT_LAYER] = Param((cfg.vocab_size, cfg.hidden_size), COLUMN)
    return out


def layer_extra_state(i: int) -> list[str]:
    p = LAYER_PREFIX.format(i=i)
    return [p + m + EXTRA_STATE for m in ("self_attention.linear_qkv", "self_attention.linear_proj",
                                          "mlp.linear_fc1", "mlp.linear_fc2")]


def post_extra_state(head: Head) -> list[str]:
    return [] if head.is_classifier else ["output_layer" + EXTRA_STATE]


def layer_of(name: str) -> Optional[int]:
    """The global layer number of a `decoder.layers.N.` name, None for the others."""
    if not name.startswith("decoder.layers."):
        return None
    return int(name.split(".")[2])


def full_model_params(cfg: GLMConfig, head: Head) -> dict[str, Param]:
    out = pre_params(cfg)
    for i in range(cfg.num_layers):
        out.update(layer_params(cfg, i))
    out.update(post_params(cfg, head))
    return out
