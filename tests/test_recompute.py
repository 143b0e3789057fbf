"""Activation recomputation must give bit-identical gradients, dropout masks included."""

import pytest
import torch

from glm_testing import make_batch, tiny_config

RECOMPUTE = [("full", "uniform", 1), ("full", "uniform", 2), ("full", "block", 1),
             ("selective", None, None)]


def _loss(model, batch):
    from glm_megatron.training.losses import language_model_loss
    return language_model_loss(model(batch), batch)[0]


def _grads(ctx, options, preset):
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.random import seed_all
    seed_all(ctx, 99)  # same dropout stream for every variant
    config = tiny_config(preset, num_layers=3, hidden_dropout=0.1, attention_dropout=0.1)
    model = build_model(config, ctx, seed=5, options=options).train()
    loss = _loss(model, make_batch("blank", batch=2, device=ctx.device))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("preset", ["glm-tiny", "glm4-0414-tiny"])
@pytest.mark.parametrize("recompute", RECOMPUTE, ids=lambda r: "-".join(map(str, r)))
def test_recompute_is_bit_identical(ctx, preset, recompute):
    from glm_megatron.model.options import ExecutionOptions
    loss, grads = _grads(ctx, ExecutionOptions(), preset)
    loss_r, grads_r = _grads(ctx, ExecutionOptions(False, *recompute), preset)
    assert torch.equal(loss, loss_r)
    for name, grad in grads.items():
        assert torch.equal(grad, grads_r[name]), name


def test_dropout_is_active(ctx):
    """Guard for the test above: with dropout, two different seeds give different losses."""
    from glm_megatron.model.builder import build_model
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.random import seed_all
    loss_a, _ = _grads(ctx, ExecutionOptions(), "glm-tiny")
    seed_all(ctx, 100)
    model = build_model(tiny_config("glm-tiny", num_layers=3, hidden_dropout=0.1,
                                    attention_dropout=0.1), ctx, seed=5).train()
    batch = make_batch("blank", batch=2, device=ctx.device)
    assert not torch.equal(loss_a, _loss(model, batch).detach())


def test_bad_recompute_options():
    from glm_megatron.config import ConfigError
    from glm_megatron.model.options import ExecutionOptions
    with pytest.raises(ConfigError, match="--recompute-method"):
        ExecutionOptions(False, "full", None, 1)
    with pytest.raises(ConfigError, match="--recompute-num-layers"):
        ExecutionOptions(False, "full", "uniform", None)
