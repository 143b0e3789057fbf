"""Our model against THUDM's own implementations (SwissArmyTransformer), fp32, same weights.

GLM (learned 2D positions) and ChatGLM-6B (2D RoPE, DeepNorm) on blank-infilling rows made by
our collator (several spans, `sep`, padding); ChatGLM2 and ChatGLM3 (multi-query attention,
interleaved partial RoPE run by SAT's own Triton kernel, SwiGLU, RMSNorm) on causal inputs.
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
def sat_world(single_process_world):
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


def ours_and_sat(kind: str, config):
    from glm_megatron.model.builder import build_model
    ours = randomize(build_model(config, seed=0), seed=5).eval()
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
