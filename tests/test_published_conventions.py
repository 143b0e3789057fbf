"""Conventions of the published GLM models that are options of ours: GLM-130B's DeepNorm
initialisation and embedding gradient shrink, ChatGLM-6B's fp16 rotary frequencies."""

from __future__ import annotations

import math

import pytest
import torch

from glm_testing import make_batch, tiny_config


def _std(t: torch.Tensor) -> float:
    return float(t.float().std())


def test_deepnorm_initialisation_is_glm130b(ctx):
    """Xavier normal on every linear weight, times (2N)^-1/2 on the FFN, value and output
    projections (GLM-130B paper); Q and K unscaled; biases zero."""
    from glm_megatron.model.builder import build_model
    config = tiny_config("glm-130b-tiny", hidden_size=256, ffn_hidden_size=512, num_layers=3)
    model = build_model(config, ctx, seed=1)
    h, ffn, n = config.hidden_size, config.ffn_hidden_size, config.num_layers
    scale = (2 * n) ** -0.5
    layer = model.decoder.layers["1"]
    qkv = layer.self_attention.linear_qkv.weight.view(config.num_query_groups, -1,
                                                      config.kv_channels, h)
    expected = {
        "query": (qkv[:, :-2], math.sqrt(2 / (h + h))),
        "key": (qkv[:, -2], math.sqrt(2 / (h + h))),
        "value": (qkv[:, -1], scale * math.sqrt(2 / (h + h))),
        "output": (layer.self_attention.linear_proj.weight, scale * math.sqrt(2 / (h + h))),
        "fc1": (layer.mlp.linear_fc1.weight, scale * math.sqrt(2 / (h + 2 * ffn))),
        "fc2": (layer.mlp.linear_fc2.weight, scale * math.sqrt(2 / (ffn + h))),
    }
    for name, (weight, std) in expected.items():
        assert _std(weight) == pytest.approx(std, rel=0.03), name
    assert float(layer.self_attention.linear_qkv.bias.abs().max()) == 0.0
    # Without DeepNorm: GLM's N(0, 0.02), output projections 0.02 / sqrt(2N).
    plain = build_model(tiny_config("glm-tiny", hidden_size=256, num_layers=3), ctx, seed=1)
    plain_layer = plain.decoder.layers["1"]
    assert _std(plain_layer.self_attention.linear_qkv.weight) == pytest.approx(0.02, rel=0.03)
    assert _std(plain_layer.mlp.linear_fc2.weight) == pytest.approx(0.02 / math.sqrt(6),
                                                                    rel=0.03)


def test_embedding_gradient_shrink_scales_only_the_gradient(ctx):
    from glm_megatron.model.builder import build_model
    from glm_megatron.training.losses import language_model_loss
    batch = make_batch("causal", batch=2, seq=12, device=ctx.device)
    grads, losses = {}, {}
    for alpha in (1.0, 0.1):
        model = build_model(tiny_config("chatglm3-tiny", embedding_gradient_shrink_alpha=alpha),
                            ctx, seed=4)
        loss, _ = language_model_loss(model(batch), batch)
        loss.backward()
        losses[alpha] = loss.detach()
        grads[alpha] = {n: p.grad.clone() for n, p in model.named_parameters()}
    # GLM-130B's form, e * alpha + e.detach() * (1 - alpha), equals e up to fp32 rounding.
    torch.testing.assert_close(losses[0.1], losses[1.0])
    name = "embedding.word_embeddings.weight"
    torch.testing.assert_close(grads[0.1][name], 0.1 * grads[1.0][name])
    for other in grads[1.0]:
        if other != name:
            torch.testing.assert_close(grads[0.1][other], grads[1.0][other])


def test_fp16_rotary_frequencies_match_chatglm6b(ctx):
    """ChatGLM-6B's published RotaryEmbedding (half precision): inv_freq in fp16, positions in
    fp16, angles = their product in fp16, cos/sin of that in fp16."""
    from glm_megatron.model.rotary import RotaryEmbedding
    config = tiny_config("chatglm-6b-tiny", rotary_fp16_frequencies=True)
    dim = config.rotary_dim
    inv_freq = (1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))).half()
    t = torch.arange(300, dtype=torch.half)
    angles = torch.einsum("i,j->ij", t, inv_freq)
    published = torch.cat((angles, angles), dim=-1)
    positions = torch.arange(300)[None]
    cos, sin = RotaryEmbedding(config).cos_sin(positions, torch.float32)
    torch.testing.assert_close(cos[:, 0, 0], published.cos().float(), rtol=0, atol=0)
    torch.testing.assert_close(sin[:, 0, 0], published.sin().float(), rtol=0, atol=0)
    cos32, _ = RotaryEmbedding(tiny_config("chatglm-6b-tiny")).cos_sin(positions, torch.float32)
    assert not torch.equal(cos32, cos)  # the option is what makes them equal


def test_published_chatglm6b_imports_with_its_fp16_angles_and_remote_code_keeps_them():
    """A published chatglm-6b config.json (no key of ours) means the published code's fp16
    angles; our export records the choice and our remote code computes the same tables."""
    from glm_megatron.convert.layouts import LAYOUTS, SpecialTokens
    from glm_megatron.convert.schema import Head
    from glm_megatron.hf_remote.modeling_chatglm import RotaryEmbedding2D
    from glm_megatron.model.rotary import RotaryEmbedding
    from published_configs import tiny_published
    layout = LAYOUTS["chatglm-6b"]
    config = layout.config_from_hf(tiny_published("chatglm-6b"))[0]
    assert config.rotary_fp16_frequencies
    exported = layout.config_to_hf(config, Head(), SpecialTokens(), torch.float32)
    assert exported["rotary_fp16_frequencies"] is True
    positions = torch.arange(300)[None]
    ours, _ = RotaryEmbedding(config).cos_sin(positions, torch.float32)
    remote, _ = RotaryEmbedding2D(config.rotary_dim, fp16_frequencies=True)(positions,
                                                                            torch.float32)
    torch.testing.assert_close(remote[0, 0], ours[:, 0, 0], rtol=0, atol=0)
