"""The Hugging Face layouts we read and write: key tables, config.json translation, and which of
our configurations each layout can hold.

| layout         | transformers class                        | QKV layout                  |
|----------------|-------------------------------------------|-----------------------------|
| glm            | GlmForCausalLM / GlmForSequenceClass.     | q_proj, k_proj, v_proj      |
| glm4           | Glm4ForCausalLM (GLM-4-0414, extra norms) | q_proj, k_proj, v_proj      |
| chatglm        | ChatGLM2/3, GLM-4 remote code, MQA        | fused [Q_all; K_all; V_all] |
| chatglm-mha    | ChatGLM2/3 remote code without MQA        | fused per head [q, k, v]    |
| glm-10b        | GLM remote code (ours, hf_remote/)        | fused [Q_all; K_all; V_all] |
| chatglm-6b     | ChatGLM-6B remote code (ours, hf_remote/) | fused per head [q, k, v]    |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Optional, Union

import torch

from ..config import ConfigError, GLMConfig
from .errors import ConversionError
from .mapping import Layout, Rule
from .schema import Head
from .transforms import FUSED_QKV_CONTIGUOUS, FUSED_QKV_PER_HEAD, SPLIT_QKV

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass
class SpecialTokens:
    """Token ids a Hugging Face config (and generation) needs; None where unknown."""
    pad: Optional[int] = None
    eos: Optional[Union[int, list]] = None  # GLM-4 lists several end tokens: kept as published
    bos: Optional[int] = None
    mask: Optional[int] = None  # [MASK]
    smask: Optional[int] = None  # [sMASK]
    gmask: Optional[int] = None  # [gMASK]
    sop: Optional[int] = None  # <|startofpiece|>: starts a blank's generation
    eop: Optional[int] = None  # <|endofpiece|>: ends it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Optional[dict]) -> "SpecialTokens":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names})


def _first(value):
    return value[0] if isinstance(value, list) and value else value


# Predicates the tables use ----------------------------------------------------------------
def _qkv_bias(cfg: GLMConfig, _head) -> bool:
    return cfg.add_bias_linear or cfg.add_qkv_bias


def _linear_bias(cfg: GLMConfig, _head) -> bool:
    return cfg.add_bias_linear


def _layernorm(cfg: GLMConfig, _head) -> bool:
    return cfg.normalization == "LayerNorm"


def _post_norms(cfg: GLMConfig, _head) -> bool:
    return cfg.post_sublayer_norms


def _block_table(cfg: GLMConfig, _head) -> bool:
    return cfg.block_position_encoding


def _lm_head(cfg: GLMConfig, head: Head) -> bool:
    return not head.is_classifier and cfg.untie_embeddings_and_output_weights


def _classifier(_cfg, head: Head) -> bool:
    return head.is_classifier


def _with_bias(ours: str, hf: str, bias_when, transform=None) -> tuple[Rule, ...]:
    """A module's weight and (when `bias_when`) its bias, mapped the same way."""
    extra = {} if transform is None else {"transform": transform}
    return (Rule((ours + ".weight",), (hf + ".weight",), **extra),
            Rule((ours + ".bias",), (hf + ".bias",), when=bias_when, **extra))


L = "decoder.layers.{i}."
WORD_EMBEDDINGS = "embedding.word_embeddings.weight"

# transformers glm / glm4 ---------------------------------------------------------------------
_HL = "model.layers.{i}."
_NATIVE_PRE = (Rule((WORD_EMBEDDINGS,), ("model.embed_tokens.weight",)),)
_NATIVE_LAYER = (
    Rule((L + "input_layernorm.weight",), (_HL + "input_layernorm.weight",)),
    Rule((L + "self_attention.linear_qkv.weight",),
         tuple(_HL + f"self_attn.{p}_proj.weight" for p in "qkv"), SPLIT_QKV),
    Rule((L + "self_attention.linear_qkv.bias",),
         tuple(_HL + f"self_attn.{p}_proj.bias" for p in "qkv"), SPLIT_QKV, when=_qkv_bias),
    Rule((L + "self_attention.linear_proj.weight",), (_HL + "self_attn.o_proj.weight",)),
    Rule((L + "pre_mlp_layernorm.weight",), (_HL + "post_attention_layernorm.weight",)),
    # fc1 rows are [gate; up], transformers' gate_up_proj order: no transform.
    Rule((L + "mlp.linear_fc1.weight",), (_HL + "mlp.gate_up_proj.weight",)),
    Rule((L + "mlp.linear_fc2.weight",), (_HL + "mlp.down_proj.weight",)),
    Rule((L + "post_self_attn_layernorm.weight",), (_HL + "post_self_attn_layernorm.weight",),
         when=_post_norms),
    Rule((L + "post_mlp_layernorm.weight",), (_HL + "post_mlp_layernorm.weight",),
         when=_post_norms),
)
_NATIVE_POST = (
    Rule(("decoder.final_layernorm.weight",), ("model.norm.weight",)),
    Rule(("output_layer.weight",), ("lm_head.weight",), when=_lm_head),
    Rule(("score.weight",), ("score.weight",), when=_classifier),
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
    cfg = _config(
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
        problems = _rope_1d_problems(cfg)
        if cfg.post_sublayer_norms != post_norms:
            problems.append("post-sublayer norms (GLM-4-0414: use glm4)" if cfg.post_sublayer_norms
                            else "no post-sublayer norms (use glm)")
        return problems
    return check


def _rope_1d_problems(cfg: GLMConfig) -> list[str]:
    """What ChatGLM2/3-architecture layouts (glm, glm4, chatglm) cannot hold."""
    problems = []
    if cfg.normalization != "RMSNorm":
        problems.append("LayerNorm")
    if cfg.position_embedding_type != "rope" or cfg.block_position_encoding:
        problems.append("2D or learned positions")
    if not cfg.rotary_interleaved:
        problems.append("non-interleaved RoPE")
    if cfg.activation != "swiglu":
        problems.append(f"{cfg.activation} MLP")
    if cfg.add_bias_linear:
        problems.append("biases on the attention output and MLP")
    if cfg.apply_residual_connection_post_layernorm or cfg.deepnorm:
        problems.append("DeepNorm residuals")
    return problems


# ChatGLM2/3, GLM-4 remote-code layout --------------------------------------------------------
_CL = "transformer.encoder.layers.{i}."


def _chatglm2_layout(name: str, qkv, mqa: bool) -> Layout:
    layer = (
        Rule((L + "input_layernorm.weight",), (_CL + "input_layernorm.weight",)),
        Rule((L + "self_attention.linear_qkv.weight",),
             (_CL + "self_attention.query_key_value.weight",), qkv),
        Rule((L + "self_attention.linear_qkv.bias",),
             (_CL + "self_attention.query_key_value.bias",), qkv, when=_qkv_bias),
        Rule((L + "self_attention.linear_proj.weight",), (_CL + "self_attention.dense.weight",)),
        Rule((L + "pre_mlp_layernorm.weight",), (_CL + "post_attention_layernorm.weight",)),
        # dense_h_to_4h rows are [gate; up] as ours.
        Rule((L + "mlp.linear_fc1.weight",), (_CL + "mlp.dense_h_to_4h.weight",)),
        Rule((L + "mlp.linear_fc2.weight",), (_CL + "mlp.dense_4h_to_h.weight",)),
    )

    def detect(c: dict) -> bool:
        return (c.get("model_type") == "chatglm" and "padded_vocab_size" in c
                and bool(c.get("multi_query_attention", False)) == mqa)

    def unsupported(cfg: GLMConfig, head: Head) -> list[str]:
        problems = _rope_1d_problems(cfg)
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
        post=(Rule(("decoder.final_layernorm.weight",),
                   ("transformer.encoder.final_layernorm.weight",)),
              Rule(("output_layer.weight",), ("transformer.output_layer.weight",))),
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
    cfg = _config(
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


# GLM (glm-10b) remote-code layout --------------------------------------------------------------
_GL = "glm.transformer.layers.{i}."
_GLM10B_LAYER = (
    *_with_bias(L + "input_layernorm", _GL + "input_layernorm", _layernorm),
    *_with_bias(L + "self_attention.linear_qkv", _GL + "attention.query_key_value", _qkv_bias,
                FUSED_QKV_CONTIGUOUS),
    *_with_bias(L + "self_attention.linear_proj", _GL + "attention.dense", _linear_bias),
    *_with_bias(L + "pre_mlp_layernorm", _GL + "post_attention_layernorm", _layernorm),
    *_with_bias(L + "mlp.linear_fc1", _GL + "mlp.dense_h_to_4h", _linear_bias),
    *_with_bias(L + "mlp.linear_fc2", _GL + "mlp.dense_4h_to_h", _linear_bias),
)


def _two_d_problems(cfg: GLMConfig, head: Head) -> list[str]:
    """What the two 2D-position layouts share: GLM's LayerNorm + GeLU transformer, MHA."""
    problems = []
    if cfg.normalization != "LayerNorm":
        problems.append("RMSNorm")
    if cfg.activation != "gelu" or not cfg.openai_gelu:
        problems.append(f"{cfg.activation} MLP without the tanh GeLU")
    if not cfg.add_bias_linear:
        problems.append("no linear biases")
    if cfg.num_query_groups != cfg.num_attention_heads:
        problems.append("grouped-query attention")
    if cfg.kv_channels * cfg.num_attention_heads != cfg.hidden_size:
        problems.append("a head dim other than hidden / heads")
    if cfg.post_sublayer_norms:
        problems.append("post-sublayer norms")
    if head.is_classifier:
        problems.append("a classification head")
    return problems


def _glm10b_unsupported(cfg: GLMConfig, head: Head) -> list[str]:
    problems = _two_d_problems(cfg, head)
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
    cfg = _config(
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
    return cfg, Head(), _blank_tokens_from_hf(c)


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
        **_blank_tokens_to_hf(tokens), "use_cache": True, "torch_dtype": DTYPE_NAMES[dtype],
    }


# ChatGLM-6B v1 remote-code layout ---------------------------------------------------------------
_C6 = "transformer.layers.{i}."
_CHATGLM6B_LAYER = (
    *_with_bias(L + "input_layernorm", _C6 + "input_layernorm", _layernorm),
    *_with_bias(L + "self_attention.linear_qkv", _C6 + "attention.query_key_value", _qkv_bias,
                FUSED_QKV_PER_HEAD),
    *_with_bias(L + "self_attention.linear_proj", _C6 + "attention.dense", _linear_bias),
    *_with_bias(L + "pre_mlp_layernorm", _C6 + "post_attention_layernorm", _layernorm),
    *_with_bias(L + "mlp.linear_fc1", _C6 + "mlp.dense_h_to_4h", _linear_bias),
    *_with_bias(L + "mlp.linear_fc2", _C6 + "mlp.dense_4h_to_h", _linear_bias),
)


def _chatglm6b_unsupported(cfg: GLMConfig, head: Head) -> list[str]:
    problems = _two_d_problems(cfg, head)
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
    cfg = _config(
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
    return cfg, Head(), _blank_tokens_from_hf(c)


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
        **_blank_tokens_to_hf(tokens), "use_cache": True, "torch_dtype": DTYPE_NAMES[dtype],
    }


def _blank_tokens_to_hf(tokens: SpecialTokens) -> dict:
    """Blank-infilling ids: generation starts a blank with sop (bos) and ends it with eop."""
    return {"pad_token_id": tokens.pad,
            "bos_token_id": tokens.sop if tokens.sop is not None else tokens.bos,
            "eos_token_id": tokens.eop if tokens.eop is not None else tokens.eos,
            "mask_token_id": tokens.mask, "smask_token_id": tokens.smask,
            "gmask_token_id": tokens.gmask, "eod_token_id": tokens.eos}


def _blank_tokens_from_hf(c: dict) -> SpecialTokens:
    return SpecialTokens(pad=c.get("pad_token_id"), eos=c.get("eod_token_id"),
                         sop=c.get("bos_token_id"), eop=_first(c.get("eos_token_id")),
                         mask=c.get("mask_token_id"), smask=c.get("smask_token_id"),
                         gmask=c.get("gmask_token_id"))


def _config(**values) -> GLMConfig:
    try:
        return GLMConfig(**values)
    except ConfigError as e:
        raise ConversionError(f"config.json describes a model we cannot build: {e}") from None


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("glm", "transformers GlmForCausalLM / GlmForSequenceClassification (ChatGLM2/3, GLM-4)",
           _NATIVE_PRE, _NATIVE_LAYER, _NATIVE_POST, detect=_native_detect("glm"),
           config_from_hf=_native_from_hf, config_to_hf=_native_to_hf("glm", "Glm"),
           unsupported=_native_unsupported(False)),
    Layout("glm4", "transformers Glm4ForCausalLM (GLM-4-0414: norms after each sublayer)",
           _NATIVE_PRE, _NATIVE_LAYER, _NATIVE_POST, detect=_native_detect("glm4"),
           config_from_hf=_native_from_hf, config_to_hf=_native_to_hf("glm4", "Glm4"),
           unsupported=_native_unsupported(True)),
    _chatglm2_layout("chatglm", FUSED_QKV_CONTIGUOUS, mqa=True),
    _chatglm2_layout("chatglm-mha", FUSED_QKV_PER_HEAD, mqa=False),
    Layout("glm-10b", "GLM remote code (glm-10b, glm-large: learned 2D positions)",
           (Rule((WORD_EMBEDDINGS,), ("glm.word_embeddings.weight",)),
            Rule(("embedding.position_embeddings.weight",),
                 ("glm.transformer.position_embeddings.weight",)),
            Rule(("embedding.block_position_embeddings.weight",),
                 ("glm.transformer.block_position_embeddings.weight",), when=_block_table)),
           _GLM10B_LAYER,
           _with_bias("decoder.final_layernorm", "glm.transformer.final_layernorm", _layernorm),
           detect=lambda c: c.get("model_type") == "glm" and "num_layers" in c,
           config_from_hf=_glm10b_from_hf, config_to_hf=_glm10b_to_hf,
           unsupported=_glm10b_unsupported,
           remote_code=("configuration_glm", "modeling_glm", "blank_infilling",
                        "blank_infilling_lm")),
    Layout("chatglm-6b", "ChatGLM-6B remote code (2D RoPE, DeepNorm)",
           (Rule((WORD_EMBEDDINGS,), ("transformer.word_embeddings.weight",)),),
           _CHATGLM6B_LAYER,
           (*_with_bias("decoder.final_layernorm", "transformer.final_layernorm", _layernorm),
            Rule(("output_layer.weight",), ("lm_head.weight",), when=_lm_head)),
           detect=lambda c: c.get("model_type") == "chatglm" and "padded_vocab_size" not in c,
           config_from_hf=_chatglm6b_from_hf, config_to_hf=_chatglm6b_to_hf,
           unsupported=_chatglm6b_unsupported,
           ignorable=(r"transformer\.layers\.\d+\.attention\.rotary_emb\.inv_freq",),
           remote_code=("configuration_chatglm", "modeling_chatglm", "blank_infilling",
                        "blank_infilling_lm")),
)}


def default_layout(cfg: GLMConfig, head: Head) -> Layout:
    """The layout a checkpoint exports to when --hf-layout is not given."""
    if cfg.position_embedding_type == "learned_absolute":
        return LAYOUTS["glm-10b"]
    if cfg.block_position_encoding:
        return LAYOUTS["chatglm-6b"]
    return LAYOUTS["glm4" if cfg.post_sublayer_norms else "glm"]


def check_supported(layout: Layout, cfg: GLMConfig, head: Head):
    problems = layout.unsupported(cfg, head)
    if not problems:
        return
    default = default_layout(cfg, head)
    if layout is not default:
        raise ConversionError(
            f"--hf-layout {layout.name} cannot hold this model ({'; '.join(problems)}); "
            f"leave --hf-layout out to use {default.name}, the layout of its generation")
    native = LAYOUTS["glm4" if cfg.post_sublayer_norms else "glm"]
    if cfg.block_position_encoding and not native.unsupported(
            replace(cfg, block_position_encoding=False), head):
        raise ConversionError(
            "no Hugging Face layout holds this model: it is the ChatGLM2/3 / GLM-4 architecture "
            "with GLM's block positions on the rotary dims (--objective blank-infilling), which "
            f"transformers' {native.name} has no place for; pretrain with --no-block-position "
            "to export it natively")
    raise ConversionError(f"no Hugging Face layout holds this model: {layout.name}, the layout "
                          f"of its generation, cannot ({'; '.join(problems)})")


def detect_layout(hf_config: dict, path: str) -> Layout:
    found = [layout for layout in LAYOUTS.values() if layout.detect(hf_config)]
    if not found:
        arch = hf_config.get("architectures") or hf_config.get("model_type")
        raise ConversionError(
            f"{path}: architecture {arch} (model_type {hf_config.get('model_type')!r}) is not "
            f"supported; import reads these layouts: {', '.join(LAYOUTS)}")
    return found[0]
