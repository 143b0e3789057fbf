"""GLM's remote-code layout (`glm-10b`: glm-large and glm-10b, learned 2D positions; the
remote code is ours, in hf_remote/)."""

from __future__ import annotations

from ...config import GLMConfig
from ...param_names import FINAL_NORM, WORD_EMBEDDINGS
from ..errors import ConversionError
from ..mapping import Layout, Rule
from ..schema import Head
from ..transforms import FUSED_QKV_CONTIGUOUS
from .common import (DTYPE_NAMES, SpecialTokens, blank_tokens_from_hf, blank_tokens_to_hf,
                     block_table, build_config, layernorm, two_d_layer_rules, two_d_problems,
                     with_bias)

LAYER_RULES = two_d_layer_rules("glm.transformer.layers.{i}.", FUSED_QKV_CONTIGUOUS)


def _glm10b_unsupported(cfg: GLMConfig, head: Head) -> list[str]:
    problems = two_d_problems(cfg, head)
    if cfg.position_embedding_type != "learned_absolute":
        problems.append("rotary positions")
    if cfg.untie_embeddings_and_output_weights:
        problems.append("an untied output layer")
    if cfg.apply_residual_connection_post_layernorm or cfg.deepnorm:
        problems.append("DeepNorm residuals")
    return problems


def _glm10b_from_hf(c: dict) -> tuple[GLMConfig, Head, SpecialTokens]:
    if c.get("relative_encoding"):
        raise ConversionError("config.json: relative_encoding=true (Transformer-XL positions) "
                              "is not supported; only GLM's absolute 2D positions convert")
    hidden = c["hidden_size"]
    cfg = build_config(
        num_layers=c["num_layers"], hidden_size=hidden,
        num_attention_heads=c["num_attention_heads"],
        ffn_hidden_size=c.get("intermediate_size", 4 * hidden), vocab_size=c["vocab_size"],
        # GLM's position tables hold max_sequence_length + 1 rows.
        max_position_embeddings=c["max_sequence_length"] + 1,
        normalization="LayerNorm", norm_epsilon=c.get("layernorm_epsilon", 1e-5),
        position_embedding_type="learned_absolute",
        block_position_encoding=bool(c.get("block_position_encoding", True)),
        activation="gelu", openai_gelu=True, add_bias_linear=True, add_qkv_bias=True,
        untie_embeddings_and_output_weights=False,
        hidden_dropout=float(c.get("output_dropout_prob", 0.1)),
        attention_dropout=float(c.get("attention_dropout_prob", 0.1)),
        init_method_std=c.get("initializer_range", 0.02))
    return cfg, Head(), blank_tokens_from_hf(c)


def _glm10b_to_hf(cfg: GLMConfig, head: Head, tokens: SpecialTokens, dtype) -> dict:
    return {
        "architectures": ["GLMForConditionalGeneration"], "model_type": "glm",
        "auto_map": {"AutoConfig": "configuration_glm.GLMConfig",
                     "AutoModel": "modeling_glm.GLMModel",
                     "AutoModelForSeq2SeqLM": "modeling_glm.GLMForConditionalGeneration",
                     "AutoModelForCausalLM": "modeling_glm.GLMForConditionalGeneration"},
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.ffn_hidden_size,
        "vocab_size": cfg.vocab_size, "max_sequence_length": cfg.max_position_embeddings - 1,
        "block_position_encoding": cfg.block_position_encoding,
        "layernorm_epsilon": cfg.norm_epsilon, "attention_scale": 1.0,
        "embedding_dropout_prob": cfg.hidden_dropout, "output_dropout_prob": cfg.hidden_dropout,
        "attention_dropout_prob": cfg.attention_dropout, "relative_encoding": False,
        "initializer_range": cfg.init_method_std, "tie_word_embeddings": True,
        # What THUDM's own GLM code also reads: output_predict makes its GLMModel return logits.
        "output_predict": True, "parallel_output": True, "checkpoint_activations": False,
        "checkpoint_num_layers": 1, "pool_token": "cls", "spell_length": None,
        "spell_func": "lstm",
        **blank_tokens_to_hf(tokens), "use_cache": True, "torch_dtype": DTYPE_NAMES[dtype],
    }


GLM10B = Layout(
    "glm-10b", "GLM remote code (glm-10b, glm-large: learned 2D positions)",
    (Rule((WORD_EMBEDDINGS,), ("glm.word_embeddings.weight",)),
     Rule(("embedding.position_embeddings.weight",),
          ("glm.transformer.position_embeddings.weight",)),
     Rule(("embedding.block_position_embeddings.weight",),
          ("glm.transformer.block_position_embeddings.weight",), when=block_table)),
    LAYER_RULES,
    with_bias(FINAL_NORM, "glm.transformer.final_layernorm", layernorm),
    detect=lambda c: c.get("model_type") == "glm" and "num_layers" in c,
    config_from_hf=_glm10b_from_hf, config_to_hf=_glm10b_to_hf,
    unsupported=_glm10b_unsupported,
    remote_code=("configuration_glm", "modeling_glm", "blank_infilling",
                 "blank_infilling_lm"))
