"""Our model against THUDM's own implementations (SwissArmyTransformer), fp32, same weights.

GLM (learned 2D positions) and ChatGLM-6B (2D RoPE, DeepNorm) on blank-infilling rows made by
our collator (several spans, `sep`, padding); ChatGLM2 and ChatGLM3 (multi-query attention,
interleaved partial RoPE run by SAT's own Triton kernel, SwiGLU, RMSNorm) on causal inputs;
GLM-130B's GeGLU and 1D RoPE against SAT's own pieces.
See sat_reference.py for how SAT is installed and mapped.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from glm_testing import VOCAB, randomize, tiny_config
from sat_reference import (build_sat_model, cpu_triton_launch, load_exactly,
                           release_sat_groups, sat_package, to_sat_weights)

SEQ = 24


@pytest.fixture(scope="module")
def sat_world(distributed_world):
    sat_package()
    yield
    release_sat_groups()


def blank_infilling_batch() -> dict:
    """Token-mode rows from our collator: several spans per row, sep, padded Part B."""
    from glm_megatron.objectives import BlankInfillingConfig, SpecialTokenIds, collate
    special = SpecialTokenIds(mask=250, smask=251, gmask=252, sop=253, eop=254, dblock=255,
                              pad=249, eod=248)
    ends = np.zeros(VOCAB, dtype=bool)
    ends[240:245] = True
    rng = np.random.default_rng(7)
    samples = [rng.integers(0, 240, SEQ) for _ in range(2)]
    batch = collate(samples, rng, BlankInfillingConfig(bert_prob=1.0, bert_mask_ratio=0.3),
                    special, ends, SEQ)
    spans = (batch["tokens"] == special.sop).sum(dim=1)
    assert bool((spans >= 2).all()), "the fixture should hold several spans per row"
    return batch


def causal_batch() -> dict:
    g = torch.Generator().manual_seed(11)
    tokens = torch.randint(0, VOCAB, (2, SEQ), generator=g)
    return {"tokens": tokens, "position_ids": torch.arange(SEQ).expand(2, SEQ).clone()}


def build_model_for(config):
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.context import single_process_context
    return build_model(config, single_process_context("cpu"), seed=0)


def ours_and_sat(kind: str, config):
    ours = randomize(build_model_for(config), seed=5).eval()
    sat = build_sat_model(kind, config)
    load_exactly(sat, to_sat_weights(kind, ours.state_dict(), config))
    return ours, sat


@torch.no_grad()
def our_logits(model, batch) -> torch.Tensor:
    return model.logits(batch["tokens"], batch["position_ids"], batch.get("sep")).transpose(0, 1)


def assert_same_logits(ours: torch.Tensor, theirs: torch.Tensor):
    assert ours.shape == theirs.shape
    scale = float(theirs.abs().max())
    assert scale > 1.0, "logits this small could hide a difference"
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-6 * scale)


@pytest.mark.parametrize("kind, preset", [("glm", "glm-tiny"), ("chatglm", "chatglm-6b-tiny")])
def test_blank_infilling_logits_equal_thudm(sat_world, kind, preset):
    from glm_megatron.model.attention import glm_attention_mask
    config = tiny_config(preset)
    ours, sat = ours_and_sat(kind, config)
    batch = blank_infilling_batch()
    # SAT's masks are floats, 1 where attention is allowed.
    mask = glm_attention_mask(batch["sep"], batch["tokens"].shape[1], torch.device("cpu"))
    with torch.no_grad():
        theirs = sat(input_ids=batch["tokens"], position_ids=batch["position_ids"],
                     attention_mask=mask.float())[0]
    assert_same_logits(our_logits(ours, batch), theirs)


@pytest.mark.parametrize("kind, rotary_base", [("chatglm2", 10000.0), ("chatglm3", 40000.0)])
def test_causal_logits_equal_thudm(sat_world, kind, rotary_base):
    config = tiny_config("chatglm3-tiny", rotary_base=rotary_base)
    ours, sat = ours_and_sat(kind, config)
    batch = causal_batch()
    with torch.no_grad(), cpu_triton_launch():
        theirs = sat(input_ids=batch["tokens"], position_ids=batch["position_ids"])[0]
    assert_same_logits(our_logits(ours, batch), theirs)


@torch.no_grad()
def test_glm130b_geglu_and_rotary_equal_thudm(sat_world):
    """GLM-130B's pieces from SAT's glm130B_model (its full model is fp16/CUDA-only): GeGLU as
    x1 * gelu(x2) with the exact GeLU, and 1D RoPE (rotate-half) over the whole head."""
    import importlib
    sat_130b = importlib.import_module("sat.model.official.glm130B_model")
    config = tiny_config("glm-130b-tiny")
    ours = randomize(build_model_for(config), seed=9).eval()
    g = torch.Generator().manual_seed(2)
    mlp = ours.decoder.layers["0"].mlp
    x = torch.randn(SEQ, 2, config.hidden_size, generator=g)
    # GLM-130B's dense_h_to_4h holds [linear; activated]: our fc1 with its halves exchanged.
    w1, b1 = mlp.linear_fc1.weight, mlp.linear_fc1.bias
    ffn = config.ffn_hidden_size
    swapped_w, swapped_b = torch.cat([w1[ffn:], w1[:ffn]]), torch.cat([b1[ffn:], b1[:ffn]])
    hidden = sat_130b.GEGLU()(torch.nn.functional.linear(x, swapped_w, swapped_b))
    theirs = torch.nn.functional.linear(hidden, mlp.linear_fc2.weight, mlp.linear_fc2.bias)
    torch.testing.assert_close(mlp(x), theirs, rtol=0, atol=1e-6)

    head_dim = config.kv_channels
    rotary = sat_130b.RotaryEmbedding(head_dim, base=10000, precision=torch.float,
                                      learnable=False, device=torch.device("cpu"))
    q = torch.randn(SEQ, 2, config.num_attention_heads, head_dim, generator=g)
    positions = torch.randint(0, SEQ, (2, SEQ), generator=g)
    cos, sin = rotary(q, seq_len=int(positions.max()) + 1)
    theirs_q, _ = sat_130b.apply_rotary_pos_emb_index(q, q, cos, sin, positions.t().contiguous())
    tables = ours.rotary(positions, None, q.dtype)
    torch.testing.assert_close(ours.rotary.apply(q, tables), theirs_q, rtol=0, atol=1e-6)