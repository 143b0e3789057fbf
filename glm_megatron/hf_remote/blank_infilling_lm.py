"""The transformers plumbing that the GLM and ChatGLM-6B remote code share: weight
initialisation, the language-model output (loss, cache), and generation with a key/value cache.

Generation: `prepare_inputs_for_generation` derives the 2D positions and GLM's mask from the
whole sequence so far (blank_infilling.py) and hands the model only the tokens the cache has not
seen, with their rows of the mask; attention layers add their keys and values to the cache
through its `update(key, value, layer_idx)` (transformers' Cache API, 4.x and 5.x alike).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast

from .blank_infilling import resolve_inputs

# transformers 5 names the key/value cache `cache` (in inputs and outputs), 4.x
# `past_key_values`: the models take either and answer in the installed version's name.
CACHE_NAME = ("cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__
              else "past_key_values")


def given_cache(past_key_values, kwargs: dict):
    """The cache a forward was given, under either name."""
    cache = kwargs.pop("cache", None)  # an empty cache is falsy: compare with None
    return past_key_values if cache is None else cache


def cached_attention(query, key, value, allowed, past_key_values, layer_idx: int,
                     dropout: float = 0.0) -> torch.Tensor:
    """[b, heads, s, d] in and out; keys and values join (and come back from) the cache."""
    if past_key_values is not None:
        key, value = past_key_values.update(key, value, layer_idx)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=allowed,
                                          dropout_p=dropout)


class BlankInfillingPreTrainedModel(PreTrainedModel):
    """GLM's initialisation: N(0, initializer_range) weights, zero biases, unit norms."""

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    # The base model (self, or the attribute named base_model_prefix) holds `word_embeddings`.
    def get_input_embeddings(self):
        return getattr(self, self.base_model_prefix, self).word_embeddings

    def set_input_embeddings(self, value):
        getattr(self, self.base_model_prefix, self).word_embeddings = value

    def blank_inputs(self, input_ids, position_ids, attention_mask):
        """(position ids [b, 2, s], boolean mask [b, 1, s, s]) as blank_infilling.resolve_inputs
        derives them with this config's special tokens."""
        c = self.config
        return resolve_inputs(input_ids, position_ids, attention_mask, c.bos_token_id,
                              [c.mask_token_id, c.smask_token_id, c.gmask_token_id])


class BlankInfillingGenerationMixin(GenerationMixin):
    """Output and generation of a blank-infilling language model (mixed into the
    ForConditionalGeneration classes)."""

    # The target of position t is label t (GLM's aligned labels) or label t + 1 (ChatGLM-6B).
    shift_labels = False

    def lm_output(self, logits: torch.Tensor, labels: Optional[torch.Tensor], past_key_values,
                  return_dict: Optional[bool]):
        loss = None
        if labels is not None:
            if self.shift_labels:
                logits_, labels = logits[:, :-1], labels[:, 1:]
            else:
                logits_ = logits
            loss = F.cross_entropy(logits_.float().reshape(-1, logits.shape[-1]),
                                   labels.reshape(-1), ignore_index=-100)
        if return_dict is False:
            return tuple(t for t in (loss, logits, past_key_values) if t is not None)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_NAME: past_key_values})

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      **kwargs):
        cache = given_cache(past_key_values, kwargs)
        position_ids, allowed = self.blank_inputs(input_ids, None, attention_mask)
        seen = cache.get_seq_length() if cache is not None else 0
        return {"input_ids": input_ids[:, seen:], "position_ids": position_ids[..., seen:],
                "attention_mask": allowed[:, :, seen:], CACHE_NAME: cache}
