"""What every Hugging Face layout module shares: the special-token record, the predicates that
switch rules on and off, and the checks of what a family of layouts can hold."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional, Union

import torch

from ...config import ConfigError, GLMConfig
from ...param_names import LAYER_PREFIX as OURS
from ..errors import ConversionError
from ..mapping import Rule
from ..schema import Head

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


def first_of(value):
    return value[0] if isinstance(value, list) and value else value


# Predicates the tables use ----------------------------------------------------------------
def qkv_bias(cfg: GLMConfig, _head) -> bool:
    return cfg.add_bias_linear or cfg.add_qkv_bias


def linear_bias(cfg: GLMConfig, _head) -> bool:
    return cfg.add_bias_linear


def layernorm(cfg: GLMConfig, _head) -> bool:
    return cfg.normalization == "LayerNorm"


def post_norms(cfg: GLMConfig, _head) -> bool:
    return cfg.post_sublayer_norms


def block_table(cfg: GLMConfig, _head) -> bool:
    return cfg.block_position_encoding


def lm_head(cfg: GLMConfig, head: Head) -> bool:
    return not head.is_classifier and cfg.untie_embeddings_and_output_weights


def classifier(_cfg, head: Head) -> bool:
    return head.is_classifier


def with_bias(ours: str, hf: str, bias_when, transform=None) -> tuple[Rule, ...]:
    """A module's weight and (when `bias_when`) its bias, mapped the same way."""
    extra = {} if transform is None else {"transform": transform}
    return (Rule((ours + ".weight",), (hf + ".weight",), **extra),
            Rule((ours + ".bias",), (hf + ".bias",), when=bias_when, **extra))


def two_d_layer_rules(theirs: str, qkv_transform) -> tuple[Rule, ...]:
    """Layer i of GLM's and ChatGLM-6B's remote code (Megatron-LM module names under `theirs`,
    biases everywhere); they differ in the prefix and in how Q, K and V are fused."""
    return (
        *with_bias(OURS + "input_layernorm", theirs + "input_layernorm", layernorm),
        *with_bias(OURS + "self_attention.linear_qkv", theirs + "attention.query_key_value",
                   qkv_bias, qkv_transform),
        *with_bias(OURS + "self_attention.linear_proj", theirs + "attention.dense", linear_bias),
        *with_bias(OURS + "pre_mlp_layernorm", theirs + "post_attention_layernorm", layernorm),
        *with_bias(OURS + "mlp.linear_fc1", theirs + "mlp.dense_h_to_4h", linear_bias),
        *with_bias(OURS + "mlp.linear_fc2", theirs + "mlp.dense_4h_to_h", linear_bias),
    )


# What a family of layouts cannot hold --------------------------------------------------------
def rope_1d_problems(cfg: GLMConfig) -> list[str]:
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


def two_d_problems(cfg: GLMConfig, head: Head) -> list[str]:
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


# Blank-infilling special tokens in config.json (GLM and ChatGLM-6B remote code) --------------
def blank_tokens_to_hf(tokens: SpecialTokens) -> dict:
    """Blank-infilling ids: generation starts a blank with sop (bos) and ends it with eop."""
    return {"pad_token_id": tokens.pad,
            "bos_token_id": tokens.sop if tokens.sop is not None else tokens.bos,
            "eos_token_id": tokens.eop if tokens.eop is not None else tokens.eos,
            "mask_token_id": tokens.mask, "smask_token_id": tokens.smask,
            "gmask_token_id": tokens.gmask, "eod_token_id": tokens.eos}


def blank_tokens_from_hf(c: dict) -> SpecialTokens:
    return SpecialTokens(pad=c.get("pad_token_id"), eos=c.get("eod_token_id"),
                         sop=c.get("bos_token_id"), eop=first_of(c.get("eos_token_id")),
                         mask=c.get("mask_token_id"), smask=c.get("smask_token_id"),
                         gmask=c.get("gmask_token_id"))


def build_config(**values) -> GLMConfig:
    try:
        return GLMConfig(**values)
    except ConfigError as e:
        raise ConversionError(f"config.json describes a model we cannot build: {e}") from None
