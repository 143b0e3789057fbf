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


def glm_config(**overrides):
    """A tiny transformers GlmConfig (ChatGLM3/GLM-4 architecture)."""
    from transformers import GlmConfig
    values = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=128, rms_norm_eps=1e-5, pad_token_id=0,
                  eos_token_id=1, rope_theta=10000.0 * 4, partial_rotary_factor=0.5)
    values.update(overrides)
    return GlmConfig(**values)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int):
    """Every parameter random (norm weights around 1), so that no mapping error can hide."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else 0.05 * noise)
    return model


def make_batch(kind: str, batch: int = 2, seq: int = 16, seed: int = 0,
               device="cpu") -> dict:
    """A 'blank' batch (2D positions and sep, GLM's blank-infilling shape) or a 'causal' one."""
    return {k: v.to(device) for k, v in _cpu_batch(kind, batch, seq, seed).items()}


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


def make_trainer(ctx, model, num_microbatches: int, *, lr: float = 1e-2, eps: float = 1e-6,
                 **kwargs):
    """A Trainer with the LM loss and the suite's AdamW settings. eps 1e-6 (GLM's own
    setting): with 1e-8, Adam turns the fp32 rounding noise on gradients that are truly ~0 (the
    key bias cannot change softmax) into lr-sized steps."""
    from glm_megatron.training.losses import language_model_loss
    from glm_megatron.training.trainer import Trainer
    return Trainer(model, ctx, num_microbatches=num_microbatches, loss_fn=language_model_loss,
                   lr=lr, weight_decay=0.1, betas=(0.9, 0.95), eps=eps, clip_grad=1.0, **kwargs)


def step_loss(trainer, batches) -> float:
    """One training iteration; the loss averaged over the global batch."""
    return trainer.train_step(batches)[0].mean_loss(trainer.ctx)
