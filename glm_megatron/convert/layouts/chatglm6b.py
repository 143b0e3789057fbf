"""ChatGLM-6B's remote-code layout (`chatglm-6b`: 2D RoPE, DeepNorm, fused per-head [q, k, v];
the remote code is ours, in hf_remote/)."""

from __future__ import annotations

from ...config import GLMConfig
from ...param_names import FINAL_NORM, OUTPUT_LAYER, WORD_EMBEDDINGS
from ..errors import ConversionError
from ..mapping import Layout, Rule
from ..schema import Head
from ..transforms import FUSED_QKV_PER_HEAD
from .common import (DTYPE_NAMES, SpecialTokens, blank_tokens_from_hf, blank_tokens_to_hf,
                     build_config, layernorm, lm_head, two_d_layer_rules, two_d_problems,
                     with_bias)

LAYER_RULES = two_d_layer_rules("transformer.layers.{i}.", FUSED_QKV_PER_HEAD)


def _chatglm6b_unsupported(cfg: GLMConfig, head: Head) -> list[str]:
    problems = two_d_problems(cfg, head)
    if not (cfg.position_embedding_type == "rope" and cfg.block_position_encoding):
        problems.append("positions other than 2D RoPE")
    if cfg.rotary_interleaved or cfg.rotary_percent != 0.5:
        problems.append("a RoPE other than rotate-half on each half of the head")
    if not (cfg.apply_residual_connection_post_layernorm and cfg.deepnorm):
        problems.append("no DeepNorm residuals")
    return problems


def _chatglm6b_from_hf(c: dict) -> tuple[GLMConfig, Head, SpecialTokens]:
    if not c.get("position_encoding_2d", True):
        raise ConversionError("config.json: position_encoding_2d=false is not supported; only "
                              "ChatGLM-6B's 2D RoPE converts")
    hidden = c["hidden_size"]
    cfg = build_config(
        num_layers=c["num_layers"], hidden_size=hidden,
        num_attention_heads=c["num_attention_heads"],
        ffn_hidden_size=c.get("inner_hidden_size", 4 * hidden), vocab_size=c["vocab_size"],
        max_position_embeddings=c.get("max_sequence_length", 2048),
        normalization="LayerNorm", norm_epsilon=c.get("layernorm_epsilon", 1e-5),
        position_embedding_type="rope", block_position_encoding=True, rotary_percent=0.5,
        rotary_interleaved=False, rotary_base=10000.0, activation="gelu", openai_gelu=True,
        add_bias_linear=True, add_qkv_bias=True,
        # Published ChatGLM-6B sets no tie_word_embeddings: transformers' default (True) ties its
        # lm_head to the word embeddings, and the checkpoint saves the same tensor twice.
        untie_embeddings_and_output_weights=not c.get("tie_word_embeddings", True),
        # Published ChatGLM-6B computes its rotary angles in fp16; our exports record the choice.
        rotary_fp16_frequencies=bool(c.get("rotary_fp16_frequencies", True)),
        apply_residual_connection_post_layernorm=True, deepnorm=True)
    return cfg, Head(), blank_tokens_from_hf(c)


def _chatglm6b_to_hf(cfg: GLMConfig, head: Head, tokens: SpecialTokens, dtype) -> dict:
    return {
        "architectures": ["ChatGLMForConditionalGeneration"], "model_type": "chatglm",
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                     "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
                     "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
                     "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "inner_hidden_size": cfg.ffn_hidden_size,
        "vocab_size": cfg.vocab_size, "max_sequence_length": cfg.max_position_embeddings,
        "layernorm_epsilon": cfg.norm_epsilon, "position_encoding_2d": True,
        "tie_word_embeddings": not cfg.untie_embeddings_and_output_weights,
        "rotary_fp16_frequencies": cfg.rotary_fp16_frequencies,
        **blank_tokens_to_hf(tokens), "use_cache": True, "torch_dtype": DTYPE_NAMES[dtype],
    }


CHATGLM6B = Layout(
    "chatglm-6b", "ChatGLM-6B remote code (2D RoPE, DeepNorm)",
    (Rule((WORD_EMBEDDINGS,), ("transformer.word_embeddings.weight",)),),
    LAYER_RULES,
    (*with_bias(FINAL_NORM, "transformer.final_layernorm", layernorm),
     Rule((OUTPUT_LAYER,), ("lm_head.weight",), when=lm_head)),
    detect=lambda c: c.get("model_type") == "chatglm" and "padded_vocab_size" not in c,
    config_from_hf=_chatglm6b_from_hf, config_to_hf=_chatglm6b_to_hf,
    unsupported=_chatglm6b_unsupported,
    ignorable=(r"transformer\.layers\.\d+\.attention\.rotary_emb\.inv_freq",),
    remote_code=("configuration_chatglm", "modeling_chatglm", "blank_infilling",
                 "blank_infilling_lm"))
