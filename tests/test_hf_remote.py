"""Our transformers remote code for GLM and ChatGLM-6B (glm_megatron/hf_remote): the inputs it
derives from the ids, as GLM's own code lays them out."""

from __future__ import annotations

import pytest
import torch

MASK, SMASK, GMASK, SOP = 90, 91, 92, 93


def test_part_b_takes_the_last_mask_as_glm_cloze_inputs_do():
    from glm_megatron.hf_remote.blank_infilling import blank_infilling_inputs
    ids = torch.tensor([[5, MASK, 6, MASK, 7, SOP, 8, 9],  # cloze: the last [MASK]
                        [5, GMASK, 6, GMASK, 7, SOP, 8, 9],  # generation: the first [gMASK]
                        [5, MASK, 6, GMASK, 7, SOP, 8, 9],  # [MASK] wins
                        [5, 6, 7, 8, 9, SOP, 8, 9]])  # no mask: the last Part-A token
    positions, sep = blank_infilling_inputs(ids, SOP, [MASK, SMASK, GMASK])
    assert sep.tolist() == [5, 5, 5, 5]
    assert positions[:, 0, 5:].tolist() == [[3] * 3, [1] * 3, [1] * 3, [4] * 3]
    assert positions[:, 0, :5].tolist() == [list(range(5))] * 4
    assert positions[:, 1].tolist() == [[0] * 5 + [1, 2, 3]] * 4


EOP, PAD = 94, 0


def _remote_model(kind: str):
    """A random GLM or ChatGLM-6B remote-code model over a 256-token vocabulary."""
    ids = dict(mask_token_id=MASK, smask_token_id=SMASK, gmask_token_id=GMASK, bos_token_id=SOP,
               eos_token_id=EOP, pad_token_id=PAD)
    if kind == "glm":
        from glm_megatron.hf_remote.configuration_glm import GLMConfig
        from glm_megatron.hf_remote.modeling_glm import GLMForConditionalGeneration
        config = GLMConfig(num_layers=2, vocab_size=256, hidden_size=64, num_attention_heads=4,
                           max_sequence_length=64, embedding_dropout_prob=0.0,
                           attention_dropout_prob=0.0, output_dropout_prob=0.0, **ids)
        return GLMForConditionalGeneration(config).eval()
    from glm_megatron.hf_remote.configuration_chatglm import ChatGLMConfig
    from glm_megatron.hf_remote.modeling_chatglm import ChatGLMForConditionalGeneration
    config = ChatGLMConfig(num_layers=2, vocab_size=256, hidden_size=64, num_attention_heads=4,
                           inner_hidden_size=128, max_sequence_length=64, **ids)
    return ChatGLMForConditionalGeneration(config).eval()


@pytest.mark.parametrize("kind", ["glm", "chatglm"])
def test_generate_with_cache_equals_without_and_runs_one_token_per_step(kind):
    torch.manual_seed(0)
    model = _remote_model(kind)
    prompt = torch.tensor([[5, 6, MASK, 7, 8, 9, SOP], [5, GMASK, 6, 7, 8, 9, SOP]])
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda _module, inputs, _output: seen.append(inputs[0].shape[1]))
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=PAD,
                  attention_mask=torch.ones_like(prompt))
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        cached_lengths, seen[:] = list(seen), []
        full = model.generate(prompt, use_cache=False, **kwargs)
    hook.remove()
    assert torch.equal(cached, full)
    assert cached_lengths == [7, 1, 1, 1, 1, 1]  # the prompt once, then one token per step
    assert seen == [7, 8, 9, 10, 11, 12]


@pytest.mark.parametrize("kind", ["glm", "chatglm"])
def test_cached_logits_equal_the_full_forward(kind):
    from transformers import DynamicCache
    torch.manual_seed(1)
    model = _remote_model(kind)
    ids = torch.tensor([[5, MASK, 6, 7, SOP, 11, 12, 13]])
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache()
        steps = [model(**model.prepare_inputs_for_generation(ids[:, :end], cache)).logits
                 for end in (5, 6, 7, 8)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
