"""The published config.json of each GLM checkpoint (public facts from the model cards), shrunk
to tiny dimensions with every other key, name and flag kept, plus the tensors (names and shapes)
the published checkpoints hold, written from the published layouts, not from our tables.

`READ_KEYS` are the config keys each published modeling code reads to build its model, with the
value its configuration class defaults to when config.json leaves the key out: an export is
accepted by that loader when every such key has the value of the published config.
"""

from __future__ import annotations

import copy

_GLM_AUTO_MAP = {"AutoConfig": "configuration_glm.GLMConfig",
                 "AutoModel": "modeling_glm.GLMModel",
                 "AutoModelForSeq2SeqLM": "modeling_glm.GLMForConditionalGeneration",
                 "AutoModelForMultipleChoice": "modeling_glm.GLMForMultipleChoice"}
_GLM = {"architectures": ["GLMModel"], "attention_dropout_prob": 0.1, "attention_scale": 1.0,
        "auto_map": _GLM_AUTO_MAP, "block_position_encoding": True,
        "checkpoint_activations": False, "checkpoint_num_layers": 1,
        "embedding_dropout_prob": 0.1, "initializer_range": 0.02, "model_type": "glm",
        "output_dropout_prob": 0.1, "output_predict": True, "parallel_output": True,
        "pool_token": "cls", "relative_encoding": False, "spell_func": "lstm",
        "spell_length": None, "torch_dtype": "float32"}

_CHATGLM2_AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification"}
_CHATGLM2 = {"_name_or_path": "THUDM/chatglm2-6b", "model_type": "chatglm",
             "architectures": ["ChatGLMModel"], "auto_map": _CHATGLM2_AUTO_MAP,
             "add_bias_linear": False, "add_qkv_bias": True,
             "apply_query_key_layer_scaling": True,
             "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0,
             "attention_softmax_in_fp32": True, "bias_dropout_fusion": True,
             "ffn_hidden_size": 13696, "fp32_residual_connection": False, "hidden_dropout": 0.0,
             "hidden_size": 4096, "kv_channels": 128, "layernorm_epsilon": 1e-05,
             "multi_query_attention": True, "multi_query_group_num": 2,
             "num_attention_heads": 32, "num_layers": 28, "original_rope": True,
             "padded_vocab_size": 65024, "post_layer_norm": True, "rmsnorm": True,
             "seq_length": 32768, "use_cache": True, "torch_dtype": "float16",
             "transformers_version": "4.27.1", "tie_word_embeddings": False,
             "eos_token_id": 2, "pad_token_id": 0}

PUBLISHED = {
    "glm-10b": dict(_GLM, hidden_size=4096, max_sequence_length=1024, num_attention_heads=64,
                    num_layers=48, vocab_size=50304),
    "glm-large": dict(_GLM, hidden_size=1024, max_sequence_length=512, num_attention_heads=16,
                      num_layers=24, vocab_size=30592),
    "chatglm-6b": {
        "_name_or_path": "THUDM/chatglm-6b", "architectures": ["ChatGLMModel"],
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                     "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
                     "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "bos_token_id": 130004, "eos_token_id": 130005, "mask_token_id": 130000,
        "gmask_token_id": 130001, "pad_token_id": 3, "hidden_size": 4096,
        "inner_hidden_size": 16384, "layernorm_epsilon": 1e-05, "max_sequence_length": 2048,
        "model_type": "chatglm", "num_attention_heads": 32, "num_layers": 28,
        "position_encoding_2d": True, "pre_seq_len": None, "prefix_projection": False,
        "quantization_bit": 0, "torch_dtype": "float16", "transformers_version": "4.27.1",
        "use_cache": True, "vocab_size": 130528},
    "chatglm2-6b": _CHATGLM2,
    "chatglm3-6b": dict(_CHATGLM2, _name_or_path="THUDM/chatglm3-6b", seq_length=8192,
                        transformers_version="4.30.2"),
    "glm-4-9b": dict(_CHATGLM2, _name_or_path="THUDM/glm-4-9b", classifier_dropout=None,
                     layernorm_epsilon=1.5625e-07, num_hidden_layers=40, num_layers=40,
                     padded_vocab_size=151552, rope_ratio=500, seq_length=8192,
                     torch_dtype="bfloat16", vocab_size=151552,
                     eos_token_id=[151329, 151336, 151338], pad_token_id=151329),
    "GLM-4-9B-0414": {
        "architectures": ["Glm4ForCausalLM"], "attention_bias": True, "attention_dropout": 0.0,
        "eos_token_id": [151329, 151336, 151338], "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 13696,
        "max_position_embeddings": 32768, "model_type": "glm4", "num_attention_heads": 32,
        "num_hidden_layers": 40, "num_key_value_heads": 2, "pad_token_id": 151329,
        "partial_rotary_factor": 0.5, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
        "vocab_size": 151552},
}

# Tiny dimensions, under each generation's own key names; ids that the tiny vocabulary holds.
_TINY = {
    "glm": dict(hidden_size=64, num_attention_heads=4, num_layers=2, max_sequence_length=64,
                vocab_size=256),
    "chatglm-6b": dict(hidden_size=64, inner_hidden_size=256, num_attention_heads=4,
                       num_layers=2, max_sequence_length=64, vocab_size=256, bos_token_id=250,
                       eos_token_id=251, mask_token_id=252, gmask_token_id=253, pad_token_id=3),
    "chatglm2": dict(hidden_size=64, ffn_hidden_size=96, kv_channels=16, num_attention_heads=4,
                     num_layers=2, padded_vocab_size=256, seq_length=64),
    "glm4": dict(head_dim=16, hidden_size=64, intermediate_size=96, num_attention_heads=4,
                 num_hidden_layers=2, max_position_embeddings=64, vocab_size=256),
}
_FAMILY = {"glm-10b": "glm", "glm-large": "glm", "chatglm-6b": "chatglm-6b",
           "chatglm2-6b": "chatglm2", "chatglm3-6b": "chatglm2", "glm-4-9b": "chatglm2",
           "GLM-4-9B-0414": "glm4"}
_TINY_IDS = {"glm-4-9b": dict(eos_token_id=[240, 241, 242], pad_token_id=240),
             "GLM-4-9B-0414": dict(eos_token_id=[240, 241, 242], pad_token_id=240)}

# Keys each published modeling code reads (configuration_*.py of the model repositories, and
# transformers' Glm4Config), with the default its configuration class uses when a key is absent.
_COMMON_CHATGLM2 = {
    "num_layers": 28, "padded_vocab_size": 65024, "hidden_size": 4096, "ffn_hidden_size": 13696,
    "kv_channels": 128, "num_attention_heads": 32, "seq_length": 2048, "hidden_dropout": 0.0,
    "attention_dropout": 0.0, "layernorm_epsilon": 1e-5, "rmsnorm": True,
    "apply_residual_connection_post_layernorm": False, "post_layer_norm": True,
    "add_bias_linear": False, "add_qkv_bias": False, "multi_query_attention": False,
    "multi_query_group_num": 1, "rope_ratio": 1, "original_rope": True,
    "pad_token_id": None, "eos_token_id": None}
READ_KEYS = {
    "glm": {"num_layers": 24, "vocab_size": 30592, "hidden_size": 1024,
            "num_attention_heads": 16, "max_sequence_length": 512,
            "block_position_encoding": True, "relative_encoding": False, "output_predict": False,
            "attention_scale": 1.0, "spell_length": None},
    "chatglm-6b": {"vocab_size": 150528, "hidden_size": 4096, "num_layers": 28,
                   "num_attention_heads": 32, "layernorm_epsilon": 1e-5,
                   "inner_hidden_size": 16384, "max_sequence_length": 2048,
                   "position_encoding_2d": True, "bos_token_id": 150004,
                   "eos_token_id": 150005, "mask_token_id": 150000, "gmask_token_id": 150001,
                   "pad_token_id": 0, "pre_seq_len": None, "quantization_bit": 0,
                   # transformers' PretrainedConfig default: ChatGLM-6B's head is the embedding.
                   "tie_word_embeddings": True},
    "chatglm2": _COMMON_CHATGLM2,
    "glm4": {"vocab_size": 151552, "hidden_size": 4096, "intermediate_size": 13696,
             "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 2,
             "head_dim": 128, "hidden_act": "silu", "max_position_embeddings": 32768,
             "rms_norm_eps": 1.5625e-07, "attention_bias": True, "partial_rotary_factor": 0.5,
             "rope_theta": 10000.0, "tie_word_embeddings": False, "pad_token_id": 151329,
             "eos_token_id": [151329, 151336, 151338]},
}


def family(name: str) -> str:
    return _FAMILY[name]


def tiny_published(name: str) -> dict:
    """The published config.json of `name` at tiny dimensions."""
    config = copy.deepcopy(PUBLISHED[name])
    config.update(_TINY[family(name)], **_TINY_IDS.get(name, {}))
    if "num_hidden_layers" in config and family(name) == "chatglm2":
        config["num_hidden_layers"] = config["num_layers"]
    return config


def read_values(name: str, config: dict) -> dict:
    """What the published loader of `name`'s family reads from `config`."""
    return {key: config.get(key, default) for key, default in READ_KEYS[family(name)].items()}


def published_tensors(name: str, c: dict) -> dict[str, tuple]:
    """Every tensor (name -> shape) a published checkpoint of `name` holds, for config `c`."""
    kind = family(name)
    if kind == "glm":
        h, rows = c["hidden_size"], c["max_sequence_length"] + 1
        out = {"glm.word_embeddings.weight": (c["vocab_size"], h),
               "glm.transformer.position_embeddings.weight": (rows, h),
               "glm.transformer.block_position_embeddings.weight": (rows, h),
               "glm.transformer.final_layernorm.weight": (h,),
               "glm.transformer.final_layernorm.bias": (h,)}
        for i in range(c["num_layers"]):
            p = f"glm.transformer.layers.{i}."
            out.update(_linear(p + "attention.query_key_value", 3 * h, h, True))
            out.update(_linear(p + "attention.dense", h, h, True))
            out.update(_linear(p + "mlp.dense_h_to_4h", 4 * h, h, True))
            out.update(_linear(p + "mlp.dense_4h_to_h", h, 4 * h, True))
            out.update(_layer_norms(p, h, ("input_layernorm", "post_attention_layernorm")))
        return out
    if kind == "chatglm-6b":
        h, ffn = c["hidden_size"], c["inner_hidden_size"]
        out = {"transformer.word_embeddings.weight": (c["vocab_size"], h),
               "transformer.final_layernorm.weight": (h,),
               "transformer.final_layernorm.bias": (h,),
               "lm_head.weight": (c["vocab_size"], h)}
        for i in range(c["num_layers"]):
            p = f"transformer.layers.{i}."
            out.update(_linear(p + "attention.query_key_value", 3 * h, h, True))
            out.update(_linear(p + "attention.dense", h, h, True))
            out.update(_linear(p + "mlp.dense_h_to_4h", ffn, h, True))
            out.update(_linear(p + "mlp.dense_4h_to_h", h, ffn, True))
            out.update(_layer_norms(p, h, ("input_layernorm", "post_attention_layernorm")))
            # A buffer the published code saves with the weights.
            out[p + "attention.rotary_emb.inv_freq"] = (h // c["num_attention_heads"] // 4,)
        return out
    if kind == "chatglm2":
        h, ffn, hd = c["hidden_size"], c["ffn_hidden_size"], c["kv_channels"]
        qkv = (c["num_attention_heads"] + 2 * c["multi_query_group_num"]) * hd
        out = {"transformer.embedding.word_embeddings.weight": (c["padded_vocab_size"], h),
               "transformer.encoder.final_layernorm.weight": (h,),
               "transformer.output_layer.weight": (c["padded_vocab_size"], h),
               "transformer.rotary_pos_emb.inv_freq": (hd // 4,)}
        for i in range(c["num_layers"]):
            p = f"transformer.encoder.layers.{i}."
            out.update(_linear(p + "self_attention.query_key_value", qkv, h, True))
            out[p + "self_attention.dense.weight"] = (h, c["num_attention_heads"] * hd)
            out[p + "mlp.dense_h_to_4h.weight"] = (2 * ffn, h)
            out[p + "mlp.dense_4h_to_h.weight"] = (h, ffn)
            out[p + "input_layernorm.weight"] = (h,)
            out[p + "post_attention_layernorm.weight"] = (h,)
        return out
    h, hd, ffn = c["hidden_size"], c["head_dim"], c["intermediate_size"]
    out = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,),
           "lm_head.weight": (c["vocab_size"], h)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update(_linear(p + "self_attn.q_proj", c["num_attention_heads"] * hd, h, True))
        out.update(_linear(p + "self_attn.k_proj", c["num_key_value_heads"] * hd, h, True))
        out.update(_linear(p + "self_attn.v_proj", c["num_key_value_heads"] * hd, h, True))
        out[p + "self_attn.o_proj.weight"] = (h, c["num_attention_heads"] * hd)
        out[p + "mlp.gate_up_proj.weight"] = (2 * ffn, h)
        out[p + "mlp.down_proj.weight"] = (h, ffn)
        for norm in ("input_layernorm", "post_attention_layernorm", "post_self_attn_layernorm",
                     "post_mlp_layernorm"):
            out[p + norm + ".weight"] = (h,)
    return out


def _linear(prefix: str, rows: int, cols: int, bias: bool) -> dict:
    out = {prefix + ".weight": (rows, cols)}
    if bias:
        out[prefix + ".bias"] = (rows,)
    return out


def _layer_norms(prefix: str, hidden: int, names) -> dict:
    return {f"{prefix}{n}.{k}": (hidden,) for n in names for k in ("weight", "bias")}
