"""Shared test fixtures: tiny configs per generation and deterministic batches."""

from __future__ import annotations

import os

import torch

from glm_megatron.config import GLMConfig
from glm_megatron.presets import PRESETS

# Where single-rank tests run: cpu (default) or cuda. Read here only; the multi-rank tests
# always form gloo worlds on CPU.
TEST_DEVICE = os.environ.get("GLM_TEST_DEVICE", "cpu")
if TEST_DEVICE not in ("cpu", "cuda"):
    raise SystemExit(f"GLM_TEST_DEVICE={TEST_DEVICE!r}: set it to cpu or cuda")

# One tiny preset per GLM generation, plus GLM-4-0414's extra norms.
GENERATIONS = ["glm-tiny", "chatglm-6b-tiny", "chatglm3-tiny", "glm4-0414-tiny"]
VOCAB = 256


def tiny_config(preset: str, **overrides) -> GLMConfig:
    values = dict(PRESETS[preset], vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0)
    values.update(overrides)
    return GLMConfig(**values)


def make_batch(kind: str, batch: int = 2, seq: int = 16, seed: int = 0) -> dict:
    """A 'blank' batch (2D positions and sep, GLM's blank-infilling shape) or a 'causal' one,
    on this process's device."""
    from glm_megatron.training.step import to_device
    return to_device(_cpu_batch(kind, batch, seq, seed))


def _cpu_batch(kind: str, batch: int, seq: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (batch, seq), generator=g)
    labels = torch.randint(0, VOCAB, (batch, seq), generator=g)
    out = {"tokens": tokens, "labels": labels}
    if kind == "causal":
        out["position_ids"] = torch.arange(seq).expand(batch, seq).clone()
        out["loss_mask"] = torch.ones(batch, seq)
        return out
    sep = torch.randint(seq // 4, 3 * seq // 4, (batch,), generator=g)
    t = torch.arange(seq)[None]
    part_b = t >= sep[:, None]
    positions = torch.where(part_b, sep[:, None] - 1, t)
    block_positions = torch.where(part_b, t - sep[:, None] + 1, 0)
    out["position_ids"] = torch.stack([positions, block_positions], dim=1)
    out["sep"] = sep
    out["loss_mask"] = part_b.float()
    return out


def micro_batches(step: int, dp_rank: int, dp_size: int, kind: str = "blank",
                  global_batch: int = 4, micro_batch: int = 1):
    """This DP rank's micro-batches of step `step`, in Megatron-LM's order: each chunk of
    micro_batch x dp samples is split, rank r taking slice r."""
    samples = _cpu_batch(kind, global_batch, 16, 100 + step)
    for start in range(dp_rank * micro_batch, global_batch, micro_batch * dp_size):
        yield {k: v[start:start + micro_batch] for k, v in samples.items()}
