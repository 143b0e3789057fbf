"""THUDM's SwissArmyTransformer (SAT) as an independent reference, for tests only.

SAT (`sat.model.official`) holds THUDM's own implementations of GLM, ChatGLM-6B and ChatGLM2/3.
Its declared dependencies (deepspeed and more) do not install on a CPU machine, and pip cannot
express "this package without its dependencies" in an extra, so `sat_package()` installs it
with `--no-deps`, with the two imports it needs (einops, triton), into a cache directory outside
the environment, once per machine, and puts that directory on sys.path. Triton runs here in its
interpreter (TRITON_INTERPRET=1), so SAT's own ChatGLM2/3 rotary kernel executes on CPU.

`to_sat_weights(kind, ours, config)` maps our single-process weights into SAT's parameter names
and fused-QKV layout; `build_sat_model(kind, config)` builds SAT's model for the same config.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import os
import shutil
import subprocess
import sys

import torch

# Pinned so that the reference never changes under the tests.
SAT_REQUIREMENTS = ("SwissArmyTransformer==0.4.12", "einops==0.8.2", "triton==3.6.0")

SAT_CLASSES = {
    "glm": ("sat.model.official.glm_model", "GLMModel"),
    "chatglm": ("sat.model.official.chatglm_model", "ChatGLMModel"),
    "chatglm2": ("sat.model.official.chatglm2_model", "ChatGLM2Model"),
    "chatglm3": ("sat.model.official.chatglm3_model", "ChatGLM3Model"),
}


def _install_dir() -> str:
    root = os.environ.get("GLM_MEGATRON_TEST_REFERENCES") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "glm_megatron", "test-references")
    key = hashlib.sha256(" ".join(SAT_REQUIREMENTS + (sys.version,)).encode()).hexdigest()[:12]
    return os.path.join(root, f"sat-{key}")


def sat_package() -> str:
    """The directory holding SAT and its imports, installed on first use; on sys.path."""
    target = _install_dir()
    if not os.path.isdir(target):
        staging = f"{target}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
             "--disable-pip-version-check", "--target", staging, *SAT_REQUIREMENTS],
            capture_output=True, text=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError("could not pip-install the SAT reference "
                               f"({' '.join(SAT_REQUIREMENTS)}) into {target}:\n{result.stderr}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        os.replace(staging, target)
    # Triton's interpreter must be chosen before triton is imported.
    os.environ["TRITON_INTERPRET"] = "1"
    if target not in sys.path:
        sys.path.insert(0, target)
    return target


def sat_args(kind: str, config) -> argparse.Namespace:
    """The argparse namespace SAT's models are built from, for our GLMConfig `config`."""
    args = argparse.Namespace(
        num_layers=config.num_layers, vocab_size=config.vocab_size,
        hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
        hidden_size_per_attention_head=config.kv_channels,
        max_sequence_length=config.max_position_embeddings,
        inner_hidden_size=config.ffn_hidden_size, layernorm_epsilon=config.norm_epsilon,
        layernorm_order="post" if config.apply_residual_connection_post_layernorm else "pre",
        hidden_dropout=0.0, attention_dropout=0.0, skip_init=True, model_parallel_size=1,
        use_bias=config.add_bias_linear, use_qkv_bias=config.add_qkv_bias)
    if kind == "chatglm":
        # Read by ChatGLMModel only to derive inputs we pass explicitly.
        args.bos_token_id = args.mask_token_id = args.gmask_token_id = args.pad_token_id = 0
    if kind in ("chatglm2", "chatglm3"):
        args.num_multi_query_heads = config.num_query_groups
    if kind == "chatglm3":
        args.base_scale = config.rotary_base / 10000.0
    return args


def build_sat_model(kind: str, config) -> torch.nn.Module:
    """SAT's model of `kind` for `config`, weights uninitialised (load them with to_sat_weights).
    Needs torch.distributed initialised (a world of one): SAT then sets up its own groups."""
    module, name = SAT_CLASSES[kind]
    model_class = getattr(importlib.import_module(module), name)
    return model_class(sat_args(kind, config)).eval()


@contextlib.contextmanager
def cpu_triton_launch():
    """SAT launches its Triton kernel inside torch.cuda.device(x.device.index), which a CPU
    tensor (index None) cannot enter on a machine without CUDA; the interpreter needs none."""
    if torch.cuda.is_available():
        yield
        return
    original = torch.cuda.device
    torch.cuda.device = lambda index: contextlib.nullcontext()
    try:
        yield
    finally:
        torch.cuda.device = original


def release_sat_groups():
    """Forget SAT's model-parallel groups (they belong to the world being shut down)."""
    importlib.import_module("sat.mpu.initialize").destroy_model_parallel()


def _qkv_to_separate(fused: torch.Tensor, config) -> tuple:
    """Our fused QKV rows ([groups, (q per group + 2) * hd]) as (Q_all, K_all, V_all)."""
    hd, groups = config.kv_channels, config.num_query_groups
    per_group = config.num_attention_heads // groups
    blocks = fused.reshape(groups, per_group + 2, hd, *fused.shape[1:])
    q = blocks[:, :per_group].reshape(-1, *fused.shape[1:])
    k = blocks[:, per_group].reshape(-1, *fused.shape[1:])
    v = blocks[:, per_group + 1].reshape(-1, *fused.shape[1:])
    return q, k, v


def to_sat_weights(kind: str, ours: dict, config) -> dict:
    """Our full (TP=1) state dict under SAT's names. SAT splits every fused QKV as
    [Q_all; K_all; V_all] (its conversions reorder the published per-head layouts into it)."""
    out = {"transformer.word_embeddings.weight": ours["embedding.word_embeddings.weight"],
           "transformer.final_layernorm.weight": ours["decoder.final_layernorm.weight"]}
    if "decoder.final_layernorm.bias" in ours:
        out["transformer.final_layernorm.bias"] = ours["decoder.final_layernorm.bias"]
    if kind == "glm":
        out["transformer.position_embeddings.weight"] = ours["embedding.position_embeddings.weight"]
        out["mixins.block_position_embedding.block_position_embeddings.weight"] = ours[
            "embedding.block_position_embeddings.weight"]
    else:
        head = ours.get("output_layer.weight", ours["embedding.word_embeddings.weight"])
        out["mixins.chatglm-final.lm_head.weight"] = head
    ffn = config.ffn_hidden_size
    for i in range(config.num_layers):
        src, dst = f"decoder.layers.{i}.", f"transformer.layers.{i}."
        for kind_ in ("weight", "bias"):
            for ours_name, sat_name in (("input_layernorm", "input_layernorm"),
                                        ("pre_mlp_layernorm", "post_attention_layernorm"),
                                        ("self_attention.linear_proj", "attention.dense"),
                                        ("mlp.linear_fc2", "mlp.dense_4h_to_h")):
                if src + f"{ours_name}.{kind_}" in ours:
                    out[dst + f"{sat_name}.{kind_}"] = ours[src + f"{ours_name}.{kind_}"]
            if src + f"self_attention.linear_qkv.{kind_}" in ours:
                out[dst + f"attention.query_key_value.{kind_}"] = torch.cat(
                    _qkv_to_separate(ours[src + f"self_attention.linear_qkv.{kind_}"], config))
            fc1 = ours.get(src + f"mlp.linear_fc1.{kind_}")
            if fc1 is None:
                continue
            if not config.gated_mlp:
                out[dst + f"mlp.dense_h_to_4h.{kind_}"] = fc1
                continue
            gate, up = fc1[:ffn], fc1[ffn:]
            # ChatGLM2's mixin activates dense_h_to_4h and multiplies w2; ChatGLM3's activates
            # w2 and multiplies dense_h_to_4h.
            first, second = (gate, up) if kind == "chatglm2" else (up, gate)
            out[dst + f"mlp.dense_h_to_4h.{kind_}"] = first
            out[f"mixins.mlp.w2.{i}.{kind_}"] = second
    return out


def load_exactly(model: torch.nn.Module, weights: dict):
    """Load `weights` into `model`, every parameter covered and nothing left over."""
    expected = {name for name, _ in model.named_parameters()}
    missing, extra = expected - set(weights), set(weights) - expected
    if missing or extra:
        raise KeyError(f"SAT weight mapping: missing {sorted(missing)}, unused {sorted(extra)}")
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(weights[name])
