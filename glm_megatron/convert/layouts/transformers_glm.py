"""transformers' own GLM classes: `glm` (GlmForCausalLM / GlmForSequenceClassification, the
ChatGLM2/3 and GLM-4 architecture) and `glm4` (Glm4ForCausalLM, GLM-4-0414's extra norms)."""

from __future__ import annotations

import torch

from ...config import GLMConfig
from ...param_names import FINAL_NORM, OUTPUT_LAYER, SCORE, WORD_EMBEDDINGS
from ...param_names import LAYER_PREFIX as OURS
from ..errors import ConversionError
from ..mapping import Layout, Rule
from ..schema import Head
from ..transforms import SPLIT_QKV
from .common import (DTYPE_NAMES, SpecialTokens, build_config, classifier, lm_head, post_norms,
                     qkv_bias, rope_1d_problems)

# How this layout names layer i's tensors (OURS: how we do).
THEIRS = "model.layers.{i}."
PRE_RULES = (Rule((WORD_EMBEDDINGS,), ("model.embed_tokens.weight",)),)
LAYER_RULES = (
    Rule((OURS + "input_layernorm.weight",), (THEIRS + "input_layernorm.weight",)),
    Rule((OURS + "self_attention.linear_qkv.weight",),
         tuple(THEIRS + f"self_attn.{p}_proj.weight" for p in "qkv"), SPLIT_QKV),
    Rule((OURS + "self_attention.linear_qkv.bias",),
         tuple(THEIRS + f"self_attn.{p}_proj.bias" for p in "qkv"), SPLIT_QKV, when=qkv_bias),
    Rule((OURS + "self_attention.linear_proj.weight",), (THEIRS + "self_attn.o_proj.weight",)),
    Rule((OURS + "pre_mlp_layernorm.weight",), (THEIRS + "post_attention_layernorm.weight",)),
    # fc1 rows are [gate; up], transformers' gate_up_proj order: no transform.
    Rule((OURS + "mlp.linear_fc1.weight",), (THEIRS + "mlp.gate_up_proj.weight",)),
    Rule((OURS + "mlp.linear_fc2.weight",), (THEIRS + "mlp.down_proj.weight",)),
    Rule((OURS + "post_self_attn_layernorm.weight",), (THEIRS + "post_self_attn_layernorm.weight",),
         when=post_norms),
    Rule((OURS + "post_mlp_layernorm.weight",), (THEIRS + "post_mlp_layernorm.weight",),
         when=post_norms),
)
POST_RULES = (
    Rule((FINAL_NORM + ".weight",), ("model.norm.weight",)),
    Rule((OUTPUT_LAYER,), ("lm_head.weight",), when=lm_head),
    Rule((SCORE,), ("score.weight",), when=classifier),
)


def _rope_from_hf(c: dict) -> tuple[float, float]:
    """(theta, partial rotary factor) from a 5.x `rope_parameters` or 4.x top-level fields."""
    rope = c.get("rope_parameters") or {}
    if "rope_type" in rope and rope["rope_type"] not in ("default", None):
        raise ConversionError(f"config.json: rope_type {rope['rope_type']!r} is not supported; "
                              "only the default RoPE converts")
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    factor = rope.get("partial_rotary_factor", c.get("partial_rotary_factor", 0.5))
    return float(theta), float(factor)


def _native_detect(model_type: str):
    return lambda c: c.get("model_type") == model_type and "num_hidden_layers" in c


def _native_from_hf(c: dict) -> tuple[GLMConfig, Head, SpecialTokens]:
    if c.get("hidden_act", "silu") != "silu":
        raise ConversionError(f"config.json: hidden_act {c['hidden_act']!r} is not supported by "
                              "the glm layout (SwiGLU, silu)")
    theta, factor = _rope_from_hf(c)
    heads = c.get("num_attention_heads", 32)
    cfg = build_config(
        num_layers=c.get("num_hidden_layers", 40), hidden_size=c.get("hidden_size", 4096),
        num_attention_heads=heads, ffn_hidden_size=c.get("intermediate_size", 13696),
        num_query_groups=c.get("num_key_value_heads") or heads,
        kv_channels=c.get("head_dim") or c.get("hidden_size", 4096) // heads,
        vocab_size=c.get("vocab_size", 151552),
        max_position_embeddings=c.get("max_position_embeddings", 131072),
        normalization="RMSNorm", norm_epsilon=c.get("rms_norm_eps", 1.5625e-07),
        position_embedding_type="rope", block_position_encoding=False, rotary_percent=factor,
        rotary_interleaved=True, rotary_base=theta, activation="swiglu", add_bias_linear=False,
        add_qkv_bias=bool(c.get("attention_bias", True)),
        untie_embeddings_and_output_weights=not c.get("tie_word_embeddings", False),
        post_sublayer_norms=c.get("model_type") == "glm4",
        attention_dropout=float(c.get("attention_dropout", 0.0)), hidden_dropout=0.0,
        init_method_std=c.get("initializer_range", 0.02))
    head = Head()
    if any(a.endswith("ForSequenceClassification") for a in c.get("architectures") or []):
        head = Head(len(c["id2label"]) if c.get("id2label") else c.get("num_labels", 2))
    tokens = SpecialTokens(pad=c.get("pad_token_id"), eos=c.get("eos_token_id"),
                           bos=c.get("bos_token_id"))
    return cfg, head, tokens


def _native_to_hf(model_type: str, prefix: str):
    def convert(cfg: GLMConfig, head: Head, tokens: SpecialTokens, dtype: torch.dtype) -> dict:
        kind = "ForSequenceClassification" if head.is_classifier else "ForCausalLM"
        out = {
            "architectures": [prefix + kind], "model_type": model_type,
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.ffn_hidden_size, "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_query_groups, "head_dim": cfg.kv_channels,
            "hidden_act": "silu", "attention_bias": cfg.add_qkv_bias,
            "attention_dropout": cfg.attention_dropout,
            "max_position_embeddings": cfg.max_position_embeddings,
            "initializer_range": cfg.init_method_std, "rms_norm_eps": cfg.norm_epsilon,
            "tie_word_embeddings": not cfg.untie_embeddings_and_output_weights,
            # transformers 4.x reads the top-level fields, 5.x `rope_parameters`: write both.
            "rope_theta": cfg.rotary_base, "partial_rotary_factor": cfg.rotary_percent,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rotary_base,
                                "partial_rotary_factor": cfg.rotary_percent},
            # Explicit even when unknown: GlmConfig's default pad id (151329) is out of range
            # for small vocabularies.
            "pad_token_id": tokens.pad, "eos_token_id": tokens.eos, "bos_token_id": tokens.bos,
            "use_cache": True, "torch_dtype": DTYPE_NAMES[dtype], "dtype": DTYPE_NAMES[dtype],
        }
        if head.is_classifier:
            out["id2label"] = {str(i): f"LABEL_{i}" for i in range(head.num_labels)}
            out["label2id"] = {f"LABEL_{i}": i for i in range(head.num_labels)}
        return out
    return convert


def _native_unsupported(post_norms: bool):
    def check(cfg: GLMConfig, head: Head) -> list[str]:
        problems = rope_1d_problems(cfg)
        if cfg.post_sublayer_norms != post_norms:
            problems.append("post-sublayer norms (GLM-4-0414: use glm4)" if cfg.post_sublayer_norms
                            else "no post-sublayer norms (use glm)")
        return problems
    return check


GLM = Layout(
    "glm", "transformers GlmForCausalLM / GlmForSequenceClassification (ChatGLM2/3, GLM-4)",
    PRE_RULES, LAYER_RULES, POST_RULES, detect=_native_detect("glm"),
    config_from_hf=_native_from_hf, config_to_hf=_native_to_hf("glm", "Glm"),
    unsupported=_native_unsupported(False))
GLM4 = Layout(
    "glm4", "transformers Glm4ForCausalLM (GLM-4-0414: norms after each sublayer)",
    PRE_RULES, LAYER_RULES, POST_RULES, detect=_native_detect("glm4"),
    config_from_hf=_native_from_hf, config_to_hf=_native_to_hf("glm4", "Glm4"),
    unsupported=_native_unsupported(True))
