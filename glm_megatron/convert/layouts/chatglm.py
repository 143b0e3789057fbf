"""The ChatGLM2/3 and GLM-4 remote-code layout (`chatglm`: fused [Q_all; K_all; V_all],
multi-query attention) and its variant without multi-query attention (`chatglm-mha`: fused per
head [q, k, v])."""

from __future__ import annotations

from ...config import GLMConfig
from ...param_names import FINAL_NORM, OUTPUT_LAYER, WORD_EMBEDDINGS
from ...param_names import LAYER_PREFIX as OURS
from ..errors import ConversionError
from ..mapping import Layout, Rule
from ..schema import Head
from ..transforms import FUSED_QKV_CONTIGUOUS, FUSED_QKV_PER_HEAD
from .common import DTYPE_NAMES, SpecialTokens, build_config, qkv_bias, rope_1d_problems

# How this layout names layer i's tensors (OURS: how we do).
THEIRS = "transformer.encoder.layers.{i}."
def _chatglm2_layout(name: str, qkv, mqa: bool) -> Layout:
    layer = (
        Rule((OURS + "input_layernorm.weight",), (THEIRS + "input_layernorm.weight",)),
        Rule((OURS + "self_attention.linear_qkv.weight",),
             (THEIRS + "self_attention.query_key_value.weight",), qkv),
        Rule((OURS + "self_attention.linear_qkv.bias",),
             (THEIRS + "self_attention.query_key_value.bias",), qkv, when=qkv_bias),
        Rule((OURS + "self_attention.linear_proj.weight",),
             (THEIRS + "self_attention.dense.weight",)),
        Rule((OURS + "pre_mlp_layernorm.weight",), (THEIRS + "post_attention_layernorm.weight",)),
        # dense_h_to_4h rows are [gate; up] as ours.
        Rule((OURS + "mlp.linear_fc1.weight",), (THEIRS + "mlp.dense_h_to_4h.weight",)),
        Rule((OURS + "mlp.linear_fc2.weight",), (THEIRS + "mlp.dense_4h_to_h.weight",)),
    )

    def detect(c: dict) -> bool:
        return (c.get("model_type") == "chatglm" and "padded_vocab_size" in c
                and bool(c.get("multi_query_attention", False)) == mqa)

    def unsupported(cfg: GLMConfig, head: Head) -> list[str]:
        problems = rope_1d_problems(cfg)
        if cfg.post_sublayer_norms:
            problems.append("post-sublayer norms")
        if not cfg.untie_embeddings_and_output_weights:
            problems.append("tied embeddings")
        if cfg.rotary_percent != 0.5:
            problems.append(f"rotary percent {cfg.rotary_percent} (ChatGLM rotates half)")
        if head.is_classifier:
            problems.append("a classification head")
        if not mqa and cfg.num_query_groups != cfg.num_attention_heads:
            problems.append("grouped-query attention (use chatglm)")
        return problems

    return Layout(
        name=name,
        description="ChatGLM2/3 / GLM-4 remote-code layout"
                    + (" with multi-query attention" if mqa else " without multi-query attention"),
        pre=(Rule((WORD_EMBEDDINGS,), ("transformer.embedding.word_embeddings.weight",)),),
        layer=layer,
        post=(Rule((FINAL_NORM + ".weight",),
                   ("transformer.encoder.final_layernorm.weight",)),
              Rule((OUTPUT_LAYER,), ("transformer.output_layer.weight",))),
        detect=detect, config_from_hf=_chatglm2_from_hf, config_to_hf=_chatglm2_to_hf,
        unsupported=unsupported, ignorable=(r"transformer\.rotary_pos_emb\.inv_freq",))


def _chatglm2_from_hf(c: dict) -> tuple[GLMConfig, Head, SpecialTokens]:
    for key, wanted in (("rmsnorm", True), ("post_layer_norm", True), ("add_bias_linear", False),
                        ("apply_residual_connection_post_layernorm", False),
                        ("original_rope", True)):
        if bool(c.get(key, wanted)) != wanted:
            raise ConversionError(f"config.json: {key}={c[key]} is not supported for the "
                                  f"ChatGLM2/3 layout (only {key}={wanted})")
    heads = c["num_attention_heads"]
    mqa = bool(c.get("multi_query_attention", False))
    cfg = build_config(
        num_layers=c["num_layers"], hidden_size=c["hidden_size"], num_attention_heads=heads,
        ffn_hidden_size=c["ffn_hidden_size"],
        num_query_groups=c["multi_query_group_num"] if mqa else heads,
        kv_channels=c.get("kv_channels") or c["hidden_size"] // heads,
        vocab_size=c["padded_vocab_size"], max_position_embeddings=c.get("seq_length", 2048),
        normalization="RMSNorm", norm_epsilon=c.get("layernorm_epsilon", 1e-5),
        position_embedding_type="rope", block_position_encoding=False, rotary_percent=0.5,
        rotary_interleaved=True, rotary_base=10000.0 * float(c.get("rope_ratio", 1.0)),
        activation="swiglu", add_bias_linear=False, add_qkv_bias=bool(c.get("add_qkv_bias")),
        untie_embeddings_and_output_weights=True,
        hidden_dropout=float(c.get("hidden_dropout", 0.0)),
        attention_dropout=float(c.get("attention_dropout", 0.0)))
    tokens = SpecialTokens(pad=c.get("pad_token_id"), eos=c.get("eos_token_id"))
    return cfg, Head(), tokens


def _chatglm2_to_hf(cfg: GLMConfig, head: Head, tokens: SpecialTokens, dtype) -> dict:
    mqa = cfg.num_query_groups != cfg.num_attention_heads
    return {
        "architectures": ["ChatGLMModel"], "model_type": "chatglm",
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig",
                     "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
                     "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration"},
        "add_bias_linear": False, "add_qkv_bias": cfg.add_qkv_bias,
        "apply_query_key_layer_scaling": True, "apply_residual_connection_post_layernorm": False,
        "attention_dropout": cfg.attention_dropout, "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True, "ffn_hidden_size": cfg.ffn_hidden_size,
        "fp32_residual_connection": False, "hidden_dropout": cfg.hidden_dropout,
        "hidden_size": cfg.hidden_size, "kv_channels": cfg.kv_channels,
        "layernorm_epsilon": cfg.norm_epsilon, "multi_query_attention": mqa,
        "multi_query_group_num": cfg.num_query_groups,
        "num_attention_heads": cfg.num_attention_heads, "num_layers": cfg.num_layers,
        "original_rope": True, "padded_vocab_size": cfg.vocab_size, "post_layer_norm": True,
        "rmsnorm": True, "rope_ratio": cfg.rotary_base / 10000.0,
        "seq_length": cfg.max_position_embeddings, "tie_word_embeddings": False,
        "pad_token_id": tokens.pad, "eos_token_id": tokens.eos, "use_cache": True,
        "torch_dtype": DTYPE_NAMES[dtype],
    }


CHATGLM = _chatglm2_layout("chatglm", FUSED_QKV_CONTIGUOUS, mqa=True)
CHATGLM_MHA = _chatglm2_layout("chatglm-mha", FUSED_QKV_PER_HEAD, mqa=False)
