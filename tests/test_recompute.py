"""Activation recomputation must give bit-identical gradients, dropout masks included."""

import pytest
import torch

from glm_testing import make_batch, tiny_config

RECOMPUTE = [("full", "uniform", 1), ("full", "uniform", 2), ("full", "block", 1),
             ("selective", None, None)]


def _grads(options, preset):
    from glm_megatron.model.builder import build_model
    from glm_megatron.parallel.random import set_random_seed
    set_random_seed(99)  # same dropout stream for every variant
    config = tiny_config(preset, num_layers=3, hidden_dropout=0.1, attention_dropout=0.1)
    model = build_model(config, seed=5, options=options).train()
    loss = model(make_batch("blank", batch=2))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("preset", ["glm-tiny", "glm4-0414-tiny"])
@pytest.mark.parametrize("recompute", RECOMPUTE, ids=lambda r: "-".join(map(str, r)))
def test_recompute_is_bit_identical(single_process_world, preset, recompute):
    from glm_megatron.model.options import ExecutionOptions
    loss, grads = _grads(ExecutionOptions(), preset)
    loss_r, grads_r = _grads(ExecutionOptions(False, *recompute), preset)
    assert torch.equal(loss, loss_r)
    for name, grad in grads.items():
        assert torch.equal(grad, grads_r[name]), name


def test_dropout_is_active(single_process_world):
    """Guard for the test above: with dropout, two different seeds give different losses."""
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.parallel.random import set_random_seed
    loss_a, _ = _grads(ExecutionOptions(), "glm-tiny")
    set_random_seed(100)
    from glm_megatron.model.builder import build_model
    model = build_model(tiny_config("glm-tiny", num_layers=3, hidden_dropout=0.1,
                                    attention_dropout=0.1), seed=5).train()
    assert not torch.equal(loss_a, model(make_batch("blank", batch=2)).detach())


def test_bad_recompute_options():
    from glm_megatron.config import ConfigError
    from glm_megatron.model.options import ExecutionOptions
    with pytest.raises(ConfigError, match="--recompute-method"):
        ExecutionOptions(False, "full", None, 1)
    with pytest.raises(ConfigError, match="--recompute-num-layers"):
        ExecutionOptions(False, "full", "uniform", None)
