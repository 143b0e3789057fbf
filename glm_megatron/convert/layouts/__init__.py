"""The Hugging Face layouts we read and write, one module per family: key tables, config.json
translation, and which of our configurations each layout can hold.

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

from dataclasses import replace

from ...config import GLMConfig
from ..errors import ConversionError
from ..mapping import Layout
from ..schema import Head
from .chatglm import CHATGLM, CHATGLM_MHA
from .chatglm6b import CHATGLM6B
from .common import DTYPE_NAMES, SpecialTokens
from .glm10b import GLM10B
from .transformers_glm import GLM, GLM4

__all__ = ["DTYPE_NAMES", "LAYOUTS", "SpecialTokens", "check_supported", "default_layout",
           "detect_layout"]

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in
                              (GLM, GLM4, CHATGLM, CHATGLM_MHA, GLM10B, CHATGLM6B)}


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
