"""Hugging Face import and export round trips.

Random transformers models (GQA, rope ratio != 1) and ChatGLM2/3 remote-code directories that
this test writes itself (both QKV layouts) are imported at TP=2 x PP=2; our loss on a fixed batch
must equal transformers' within fp32 rounding, and exporting again must give every tensor back
bit for bit. One 4-process world evaluates every imported checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from glm_testing import glm_config, randomize
from multiprocess import run_distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERT = os.path.join(ROOT, "tools", "checkpoint", "convert.py")
VOCAB, SEQ, BATCH = 256, 12, 2


def convert(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, CONVERT, "--no-progress", *args],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"convert.py {' '.join(args)} failed:\n{result.stderr}")
    return result


def fixed_batch() -> tuple[torch.Tensor, dict]:
    """Token ids and our equivalent causal batch (labels already shifted, last token masked)."""
    ids = torch.randint(2, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(5))
    labels = torch.cat([ids[:, 1:], torch.zeros(BATCH, 1, dtype=ids.dtype)], dim=1)
    loss_mask = torch.ones(BATCH, SEQ)
    loss_mask[:, -1] = 0
    batch = {"tokens": ids, "labels": labels, "loss_mask": loss_mask,
             "position_ids": torch.arange(SEQ).expand(BATCH, SEQ).clone()}
    return ids, batch


def hf_tensors(directory: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    out = {}
    for name in sorted(os.listdir(directory)):
        if name.endswith(".safetensors"):
            out.update(load_file(os.path.join(directory, name)))
        elif name.endswith(".bin"):
            out.update(torch.load(os.path.join(directory, name), weights_only=True))
    return out


def write_chatglm_dir(glm_model, directory: str, mqa: bool, as_bin: bool):
    """A ChatGLM2/3 remote-code directory, written from the layout's definition: fused QKV
    [Q_all; K_all; V_all] with multi_query_attention, per head [q_h; k_h; v_h] without."""
    c = glm_model.config
    nh, nkv, hd, h = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.hidden_size
    src = glm_model.state_dict()
    out = {"transformer.embedding.word_embeddings.weight": src["model.embed_tokens.weight"],
           "transformer.encoder.final_layernorm.weight": src["model.norm.weight"],
           "transformer.output_layer.weight": src["lm_head.weight"],
           "transformer.rotary_pos_emb.inv_freq": torch.arange(hd // 4).float()}  # a buffer
    for i in range(c.num_hidden_layers):
        ours, theirs = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        for kind in ("weight", "bias"):
            q, k, v = (src[f"{ours}self_attn.{p}_proj.{kind}"] for p in "qkv")
            if mqa:
                fused = torch.cat([q, k, v])
            else:
                assert nkv == nh
                rest = q.shape[1:]
                fused = torch.stack([q.reshape(nh, hd, *rest), k.reshape(nh, hd, *rest),
                                     v.reshape(nh, hd, *rest)], dim=1).reshape(-1, *rest)
            out[f"{theirs}self_attention.query_key_value.{kind}"] = fused
        out[theirs + "self_attention.dense.weight"] = src[ours + "self_attn.o_proj.weight"]
        out[theirs + "input_layernorm.weight"] = src[ours + "input_layernorm.weight"]
        out[theirs + "post_attention_layernorm.weight"] = src[
            ours + "post_attention_layernorm.weight"]
        out[theirs + "mlp.dense_h_to_4h.weight"] = src[ours + "mlp.gate_up_proj.weight"]
        out[theirs + "mlp.dense_4h_to_h.weight"] = src[ours + "mlp.down_proj.weight"]
    os.makedirs(directory)
    config = {
        "architectures": ["ChatGLMModel"], "model_type": "chatglm",
        "auto_map": {"AutoConfig": "configuration_chatglm.ChatGLMConfig"},
        "add_bias_linear": False, "add_qkv_bias": True,
        "apply_residual_connection_post_layernorm": False, "attention_dropout": 0.0,
        "ffn_hidden_size": c.intermediate_size, "hidden_dropout": 0.0, "hidden_size": h,
        "kv_channels": hd, "layernorm_epsilon": c.rms_norm_eps, "multi_query_attention": mqa,
        "multi_query_group_num": nkv, "num_attention_heads": nh,
        "num_layers": c.num_hidden_layers, "original_rope": True,
        "padded_vocab_size": c.vocab_size, "post_layer_norm": True, "rmsnorm": True,
        "rope_ratio": 4.0, "seq_length": c.max_position_embeddings,
        "tie_word_embeddings": False, "eos_token_id": 1, "pad_token_id": 0,
    }
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f)
    out = {k: v.contiguous() for k, v in out.items()}
    if as_bin:
        torch.save(out, os.path.join(directory, "pytorch_model.bin"))
    else:
        from safetensors.torch import save_file
        save_file(out, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    return out


def _evaluate_worker(jobs: list[dict], out_dir: str):
    """Load each imported checkpoint at its layout and compute our loss / pooled logits."""
    import glm_megatron  # noqa: F401
    from megatron.core import parallel_state as mpu
    from glm_megatron.config import GLMConfig
    from glm_megatron.model.builder import build_model, build_model_chunks
    from glm_megatron.parallel.context import initialize_distributed, shutdown
    from glm_megatron.parallel.random import seed_all
    from glm_megatron.parallel.schedules import get_forward_backward_func
    from glm_megatron.training.checkpointing import load_checkpoint, read_metadata
    from glm_megatron.training.losses import language_model_loss

    for job in jobs:
        ctx = initialize_distributed(job["tp"], job["pp"], "cpu")
        seed_all(ctx, 1234)
        config = GLMConfig.from_dict(read_metadata(job["ckpt"]).config)
        batch = job["batch"]
        result = None
        if job["kind"] == "pooled":
            model = build_model(config, ctx, 0, num_labels=job["num_labels"], pad_token_id=0)
            load_checkpoint(job["ckpt"], model, None, None, ctx, finetune=True)
            with torch.no_grad():
                result = model.eval()(batch)
        else:
            model = build_model_chunks(config, ctx, 0)
            load_checkpoint(job["ckpt"], model, None, None, ctx, finetune=True)
            model.eval()
            # One micro-batch per sample (equal token counts: the mean is the token mean).
            forward = get_forward_backward_func(model.chunks, ctx, num_microbatches=BATCH,
                                                loss_fn=language_model_loss)
            micro = iter([{k: v[i:i + 1] for k, v in batch.items()} for i in range(BATCH)])
            output = forward(micro, forward_only=True)
            result = torch.stack(output.losses).mean() if output.losses is not None else None
        if result is not None and ctx.tp_rank == 0 and ctx.dp_rank == 0:
            torch.save(result, os.path.join(out_dir, job["name"] + ".pt"))
        torch.distributed.barrier()
        mpu.destroy_model_parallel()
    shutdown()


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory):
    """Write the HF directories, import each, evaluate all imports in one 4-process world."""
    from transformers import GlmForCausalLM, GlmForSequenceClassification
    tmp = tmp_path_factory.mktemp("hf")
    ids, batch = fixed_batch()
    cases = {}

    def add(name, model, directory, tp, pp, layout=None, kind="loss", original=None):
        ckpt = str(tmp / f"{name}-ckpt")
        convert("--direction", "hf-to-megatron", "--load-dir", directory, "--save-dir", ckpt,
                "--target-tensor-parallel-size", str(tp),
                "--target-pipeline-parallel-size", str(pp))
        cases[name] = dict(model=model.eval(), dir=directory, ckpt=ckpt, tp=tp, pp=pp,
                           layout=layout, kind=kind, original=original)

    glm = randomize(GlmForCausalLM(glm_config()), 1)
    glm.save_pretrained(tmp / "glm")
    add("glm", glm, str(tmp / "glm"), 2, 2)

    for mqa, as_bin in ((True, False), (False, True)):
        source = glm if mqa else randomize(GlmForCausalLM(glm_config(num_key_value_heads=4)), 2)
        name = "chatglm" if mqa else "chatglm-mha"
        original = write_chatglm_dir(source, str(tmp / name), mqa, as_bin)
        add(name, source, str(tmp / name), 2, 2, layout=name, original=original)

    classifier = randomize(GlmForSequenceClassification(glm_config(num_labels=3)), 3)
    classifier.save_pretrained(tmp / "cls")
    add("cls", classifier, str(tmp / "cls"), 2, 1, kind="pooled")

    cls_ids = ids.clone()
    cls_ids[1, 7:] = 0  # right padding: pooling takes the last non-pad token
    cls_batch = dict(batch, tokens=cls_ids)
    jobs = [dict(name=n, ckpt=c["ckpt"], tp=c["tp"], pp=c["pp"], kind=c["kind"],
                 num_labels=3, batch=cls_batch if c["kind"] == "pooled" else batch)
            for n, c in cases.items()]
    out = tmp / "results"
    out.mkdir()
    run_distributed(_evaluate_worker, 4, jobs, str(out))
    for name, case in cases.items():
        case["ours"] = torch.load(out / f"{name}.pt")
    return cases, ids, cls_ids, tmp


@pytest.mark.parametrize("name", ["glm", "chatglm", "chatglm-mha"])
def test_imported_loss_matches_transformers(round_trips, name):
    cases, ids, _, _ = round_trips
    case = cases[name]
    with torch.no_grad():
        reference = case["model"](input_ids=ids, labels=ids).loss
    torch.testing.assert_close(case["ours"].double(), reference.double(), rtol=1e-6, atol=1e-6)


def test_classifier_pooled_logits_match(round_trips):
    cases, _, cls_ids, _ = round_trips
    case = cases["cls"]
    with torch.no_grad():
        reference = case["model"](input_ids=cls_ids).logits
    torch.testing.assert_close(case["ours"], reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["glm", "chatglm", "chatglm-mha", "cls"])
def test_export_gives_every_tensor_back(round_trips, name):
    cases, ids, cls_ids, tmp = round_trips
    case = cases[name]
    out = str(tmp / f"{name}-export")
    args = ["--direction", "megatron-to-hf", "--load-dir", case["ckpt"], "--save-dir", out]
    if case["layout"]:
        args += ["--hf-layout", case["layout"]]
    convert(*args)
    original = case["original"] or hf_tensors(case["dir"])
    original = {k: v for k, v in original.items() if "inv_freq" not in k}
    exported = hf_tensors(out)
    assert exported.keys() == original.keys()
    for key, value in original.items():
        assert exported[key].dtype == value.dtype and torch.equal(exported[key], value), key
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert set(index["weight_map"]) == set(exported)
    if case["layout"]:
        return
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    auto = AutoModelForSequenceClassification if name == "cls" else AutoModelForCausalLM
    env_offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        reloaded = auto.from_pretrained(out).eval()
    finally:
        if env_offline is None:
            del os.environ["HF_HUB_OFFLINE"]
    inputs = cls_ids if name == "cls" else ids
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=inputs).logits, case["model"](input_ids=inputs).logits)
