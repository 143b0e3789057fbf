"""Architecture presets: the published GLM shapes and tiny ones for tests, as data.

Each preset gives ``GLMConfig`` field values; explicit command-line flags override them.
The vocabulary is not part of a preset: it comes from the tokenizer, padded as Megatron-LM pads.
"""

from __future__ import annotations

from typing import Optional

from .config import GLMConfig

# Generation 1: GLM (blank infilling, learned 2D absolute positions, tied output). The published
# position tables have max_sequence_length + 1 rows.
_GLM = dict(
    normalization="LayerNorm", norm_epsilon=1e-5,
    position_embedding_type="learned_absolute", block_position_encoding=True,
    activation="gelu", openai_gelu=True, add_bias_linear=True, add_qkv_bias=True,
    untie_embeddings_and_output_weights=False,
    hidden_dropout=0.1, attention_dropout=0.1,
)

# Generation 2: ChatGLM-6B (2D RoPE on the two halves of the head, DeepNorm, output tied to the
# word embeddings as published).
_CHATGLM = dict(
    normalization="LayerNorm", norm_epsilon=1e-5,
    position_embedding_type="rope", block_position_encoding=True, rotary_percent=0.5,
    rotary_interleaved=False, rotary_base=10000.0,
    activation="gelu", openai_gelu=True, add_bias_linear=True, add_qkv_bias=True,
    untie_embeddings_and_output_weights=False,
    apply_residual_connection_post_layernorm=True, deepnorm=True,
    hidden_dropout=0.0, attention_dropout=0.0,
)

# GLM-130B: as ChatGLM-6B's generation but 1D RoPE over the whole head (rotate-half), GeGLU with
# the exact GeLU, ffn 32768 (see model/mlp.py for its half order), tied output, DeepNorm and the
# embedding gradient shrink.
_GLM130B = dict(
    normalization="LayerNorm", norm_epsilon=1e-5,
    position_embedding_type="rope", block_position_encoding=False, rotary_percent=1.0,
    rotary_interleaved=False, rotary_base=10000.0,
    activation="geglu", openai_gelu=False, add_bias_linear=True, add_qkv_bias=True,
    untie_embeddings_and_output_weights=False,
    apply_residual_connection_post_layernorm=True, deepnorm=True,
    embedding_gradient_shrink_alpha=0.1,
    hidden_dropout=0.0, attention_dropout=0.0,
)

# Generation 3: ChatGLM2/3 and GLM-4 (RMSNorm, SwiGLU, GQA, partial interleaved RoPE).
_CHATGLM3 = dict(
    normalization="RMSNorm", norm_epsilon=1e-5,
    position_embedding_type="rope", block_position_encoding=False, rotary_percent=0.5,
    rotary_interleaved=True, rotary_base=10000.0,
    activation="swiglu", add_bias_linear=False, add_qkv_bias=True,
    untie_embeddings_and_output_weights=True,
    hidden_dropout=0.0, attention_dropout=0.0,
)

PRESETS: dict[str, dict] = {
    "glm-large": dict(_GLM, num_layers=24, hidden_size=1024, num_attention_heads=16,
                      ffn_hidden_size=4096, max_position_embeddings=513),
    "glm-10b": dict(_GLM, num_layers=48, hidden_size=4096, num_attention_heads=64,
                    ffn_hidden_size=16384, max_position_embeddings=1025),
    "chatglm-6b": dict(_CHATGLM, num_layers=28, hidden_size=4096, num_attention_heads=32,
                       ffn_hidden_size=16384, max_position_embeddings=2048),
    "glm-130b": dict(_GLM130B, num_layers=70, hidden_size=12288, num_attention_heads=96,
                     ffn_hidden_size=32768, max_position_embeddings=2048),
    "chatglm3-6b": dict(_CHATGLM3, num_layers=28, hidden_size=4096, num_attention_heads=32,
                        num_query_groups=2, kv_channels=128, ffn_hidden_size=13696,
                        max_position_embeddings=8192),
    "glm4-9b": dict(_CHATGLM3, num_layers=40, hidden_size=4096, num_attention_heads=32,
                    num_query_groups=2, kv_channels=128, ffn_hidden_size=13696,
                    max_position_embeddings=8192, rotary_base=10000.0 * 500,
                    norm_epsilon=1.5625e-07),
    "glm4-9b-0414": dict(_CHATGLM3, num_layers=40, hidden_size=4096, num_attention_heads=32,
                         num_query_groups=2, kv_channels=128, ffn_hidden_size=13696,
                         max_position_embeddings=32768, post_sublayer_norms=True),
    # Tiny shapes for tests and the built-in default run, one per generation.
    "glm-tiny": dict(_GLM, num_layers=2, hidden_size=64, num_attention_heads=4,
                     ffn_hidden_size=256, max_position_embeddings=256,
                     hidden_dropout=0.0, attention_dropout=0.0),
    "chatglm-6b-tiny": dict(_CHATGLM, num_layers=2, hidden_size=64, num_attention_heads=4,
                            ffn_hidden_size=256, max_position_embeddings=256),
    "glm-130b-tiny": dict(_GLM130B, num_layers=2, hidden_size=64, num_attention_heads=4,
                          ffn_hidden_size=128, max_position_embeddings=256),
    "chatglm3-tiny": dict(_CHATGLM3, num_layers=2, hidden_size=64, num_attention_heads=4,
                          num_query_groups=2, ffn_hidden_size=160, max_position_embeddings=256,
                          rotary_base=10000.0 * 4),
    "glm4-0414-tiny": dict(_CHATGLM3, num_layers=2, hidden_size=64, num_attention_heads=4,
                           num_query_groups=2, ffn_hidden_size=160, max_position_embeddings=256,
                           post_sublayer_norms=True),
    # The built-in default run: a small GLM-4-architecture model that learns in minutes on CPU.
    "glm4-small": dict(_CHATGLM3, num_layers=4, hidden_size=256, num_attention_heads=4,
                       num_query_groups=2, ffn_hidden_size=704, max_position_embeddings=1024),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def matching_preset(config: dict) -> Optional[str]:
    """The preset whose architecture is exactly `config` (GLMConfig.to_dict(), any vocabulary),
    None when no preset is."""
    for name in preset_names():
        values = dict(PRESETS[name], vocab_size=config.get("vocab_size", GLMConfig.vocab_size))
        if GLMConfig(**values).to_dict() == config:
            return name
    return None


# The published pretraining recipes (THUDM/GLM's config/ds_block_large.sh and ds_block_10B.sh;
# ChatGLM-6B: GLM's blank infilling with task masks, per its maintainers, mixture unpublished):
# defaults of the flags of the same names when the preset is chosen; explicit flags win.
PRETRAINING_RECIPES: dict[str, dict] = {
    "glm-large": dict(objective="blank-infilling", bert_prob=1.0, avg_block_length=3,
                      prepend_cls=True, seq_length=512),
    "glm-10b": dict(objective="blank-infilling", task_mask=True, bert_prob=0.5,
                    gap_sentence_prob=0.3, avg_block_length=3, gpt_min_ratio=0.25,
                    block_mask_prob=0.1, short_seq_prob=0.02, prepend_cls=True, seq_length=512),
    "chatglm-6b": dict(objective="blank-infilling", task_mask=True),
}
