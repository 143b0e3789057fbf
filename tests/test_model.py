"""Model semantics on one process: GLM's attention structure, heads, config errors."""

import pytest
import torch

from glm_testing import GENERATIONS, VOCAB, make_batch, tiny_config


def _logits(model, batch):
    return model.logits(batch["tokens"], batch["position_ids"], batch.get("sep")).transpose(0, 1)


@pytest.mark.parametrize("preset", GENERATIONS)
def test_tokens_after_sep_are_invisible_to_part_a(ctx, preset):
    from glm_megatron.model.builder import build_model
    model = build_model(tiny_config(preset), ctx, seed=3).eval()
    batch = make_batch("blank", batch=1, seq=16, device=ctx.device)
    sep = int(batch["sep"][0])
    changed = {k: v.clone() for k, v in batch.items()}
    changed["tokens"][0, sep:] = (changed["tokens"][0, sep:] + 1) % VOCAB
    before, after = _logits(model, batch), _logits(model, changed)
    torch.testing.assert_close(before[0, :sep], after[0, :sep], rtol=0, atol=0)
    assert not torch.allclose(before[0, sep:], after[0, sep:])


@pytest.mark.parametrize("preset", GENERATIONS)
def test_part_a_is_bidirectional(ctx, preset):
    from glm_megatron.model.builder import build_model
    model = build_model(tiny_config(preset), ctx, seed=3).eval()
    batch = make_batch("blank", batch=1, seq=16, device=ctx.device)
    sep = int(batch["sep"][0])
    changed = {k: v.clone() for k, v in batch.items()}
    changed["tokens"][0, sep - 1] = (changed["tokens"][0, sep - 1] + 1) % VOCAB
    # The first token sees the last Part-A token: bidirectional.
    assert not torch.allclose(_logits(model, batch)[0, 0], _logits(model, changed)[0, 0])


def test_causal_without_sep(ctx, monkeypatch):
    """Without sep attention is causal, through SDPA's causal flag: no mask tensor is made."""
    from glm_megatron.model.builder import build_model
    model = build_model(tiny_config("chatglm3-tiny"), ctx, seed=3).eval()
    batch = make_batch("causal", batch=1, seq=16, device=ctx.device)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["tokens"][0, 8] = (changed["tokens"][0, 8] + 1) % VOCAB
    sdpa, calls = torch.nn.functional.scaled_dot_product_attention, []

    def recording_sdpa(*args, **kwargs):
        calls.append((kwargs["attn_mask"], kwargs["is_causal"]))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    before, after = _logits(model, batch), _logits(model, changed)
    torch.testing.assert_close(before[0, :8], after[0, :8], rtol=0, atol=0)
    assert calls and all(mask is None and causal for mask, causal in calls)


def test_mask_matches_definition():
    from glm_megatron.model.attention import glm_attention_mask
    sep = torch.tensor([3, 5])
    mask = glm_attention_mask(sep, 7, torch.device("cpu"))
    for b in range(2):
        for i in range(7):
            for j in range(7):
                assert bool(mask[b, 0, i, j]) == (j < int(sep[b]) or j <= i)


def test_classification_head_pools_rightmost_non_pad(ctx):
    from glm_megatron.model.builder import build_model
    model = build_model(tiny_config("chatglm3-tiny"), ctx, seed=3, num_labels=3,
                        pad_token_id=0).eval()
    batch = make_batch("causal", batch=2, seq=8, device=ctx.device)
    batch["tokens"][:, 5:] = 0  # right padding after 5 real tokens
    batch["tokens"][:, :5] = batch["tokens"][:, :5].clamp(min=1)
    hidden = model.hidden_states(batch["tokens"], batch["position_ids"])
    torch.testing.assert_close(model(batch), model.score(hidden[4]))


def test_tp_divisibility_errors():
    from glm_megatron.config import ConfigError
    config = tiny_config("chatglm3-tiny")  # 4 heads, 2 query groups
    with pytest.raises(ConfigError, match="--num-query-groups"):
        config.check_tensor_parallel(4)
    with pytest.raises(ConfigError, match="--num-attention-heads"):
        tiny_config("glm-tiny", num_attention_heads=3, kv_channels=16).check_tensor_parallel(2)


def test_apex_norms_only_on_cuda(monkeypatch):
    """apex's fused norms are picked on a CUDA run when apex imports, torch's otherwise and in
    compiled layers (here a stand-in apex module; the selection is what is tested)."""
    import sys
    import types
    from glm_megatron.model import layers

    class FusedLayerNorm(torch.nn.LayerNorm):
        pass

    class FusedRMSNorm(torch.nn.RMSNorm):
        pass

    normalization = types.ModuleType("apex.normalization")
    normalization.FusedLayerNorm, normalization.FusedRMSNorm = FusedLayerNorm, FusedRMSNorm
    monkeypatch.setitem(sys.modules, "apex", types.ModuleType("apex"))
    monkeypatch.setitem(sys.modules, "apex.normalization", normalization)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert layers._norm_classes(cuda) == (FusedLayerNorm, FusedRMSNorm)
    assert layers._norm_classes(cpu) == (torch.nn.LayerNorm, torch.nn.RMSNorm)
    assert layers._norm_classes(cuda, compiled=True) == (torch.nn.LayerNorm, torch.nn.RMSNorm)
    # A layer knows whether it is compiled (built on the host: no GPU needed to pick classes).
    from glm_megatron.model.options import ExecutionOptions
    from glm_megatron.model.transformer import TransformerLayer
    from glm_megatron.parallel.context import single_process_context
    config, on_cuda = tiny_config("chatglm3-tiny"), single_process_context("cuda")
    assert type(TransformerLayer(config, on_cuda, ExecutionOptions()).input_layernorm) \
        is FusedRMSNorm
    compiled = ExecutionOptions(compile_backend="inductor")
    assert type(TransformerLayer(config, on_cuda, compiled).input_layernorm) is torch.nn.RMSNorm
    monkeypatch.setitem(sys.modules, "apex.normalization", None)  # apex not installed
    assert layers._norm_classes(cuda) == (torch.nn.LayerNorm, torch.nn.RMSNorm)
