"""ChatGLM-6B for transformers, in the published chatglm-6b key layout.

LayerNorm transformer with DeepNorm residuals (the residual is the normalised input scaled by
sqrt(2 * num_layers)), fused QKV interleaved per head [q_h; k_h; v_h], 2D rotary embeddings (the
first half of each head rotates with the position ids, the second half with the block position
ids, halves rotated), tanh GeLU MLP and an output layer tied to the word embeddings, as published
(an untied export has its own lm_head). Inputs follow blank infilling (see
blank_infilling.py): pass `position_ids` [b, 2, s] and `attention_mask` = sep [b], or let them
be derived from the input ids (Part B starts at the first sop token, the config's bos). `labels`
are shifted inside, as in the published ChatGLM-6B (the target of position t is label t + 1).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast

from .blank_infilling_lm import (CACHE_NAME, BlankInfillingGenerationMixin,
                                 BlankInfillingPreTrainedModel, cached_attention, given_cache)
from .configuration_chatglm import ChatGLMConfig


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding2D(nn.Module):
    """cos/sin tables for one rotary half of the head (dim = head_dim / 2), base 10000; with
    `fp16_frequencies` the frequencies, positions and angles are fp16, as in the published
    ChatGLM-6B code.

    The frequencies are computed per call rather than kept in a buffer: transformers 5 builds
    models on the meta device, which leaves non-persistent buffers uninitialised."""

    def __init__(self, dim: int, base: float = 10000.0, fp16_frequencies: bool = False):
        super().__init__()
        self.dim, self.base = dim, base
        self.frequency_dtype = torch.float16 if fp16_frequencies else torch.float32

    def forward(self, positions: torch.Tensor, dtype: torch.dtype):
        # positions [b, s] -> cos, sin [b, 1, s, dim] broadcasting over heads.
        exponent = torch.arange(0, self.dim, 2, dtype=torch.float32,
                                device=positions.device) / self.dim
        inv_freq = (1.0 / (self.base ** exponent)).to(self.frequency_dtype)
        freqs = positions.to(self.frequency_dtype)[..., None] * inv_freq
        freqs = torch.cat((freqs, freqs), dim=-1)
        return freqs.cos()[:, None].to(dtype), freqs.sin()[:, None].to(dtype)


def _apply_2d(x: torch.Tensor, tables) -> torch.Tensor:
    """x [b, heads, s, head_dim]: rotate each half with its own (cos, sin)."""
    halves = x.chunk(2, dim=-1)
    return torch.cat([h * cos + _rotate_half(h) * sin for h, (cos, sin) in zip(halves, tables)],
                     dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden, tables, allowed, past_key_values, layer_idx: int):
        batch, seq, _ = hidden.shape
        fused = self.query_key_value(hidden).view(batch, seq, self.heads, 3 * self.head_dim)
        query, key, value = (t.transpose(1, 2) for t in fused.split(self.head_dim, dim=-1))
        query, key = _apply_2d(query, tables), _apply_2d(key, tables)
        context = cached_attention(query, key, value, allowed, past_key_values, layer_idx)
        return self.dense(context.transpose(1, 2).reshape(batch, seq, -1))


class GLU(nn.Module):
    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.inner_hidden_size)
        self.dense_4h_to_h = nn.Linear(config.inner_hidden_size, config.hidden_size)

    def forward(self, hidden):
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(hidden), approximate="tanh"))


class GLMBlock(nn.Module):
    def __init__(self, config: ChatGLMConfig):
        super().__init__()
        eps = config.layernorm_epsilon
        self.alpha = math.sqrt(2 * config.num_layers)
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attention = SelfAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = GLU(config)

    def forward(self, hidden, tables, allowed, past_key_values, layer_idx: int):
        normed = self.input_layernorm(hidden)
        attention = self.attention(normed, tables, allowed, past_key_values, layer_idx)
        hidden = normed * self.alpha + attention
        normed = self.post_attention_layernorm(hidden)
        return normed * self.alpha + self.mlp(normed)


class ChatGLMPreTrainedModel(BlankInfillingPreTrainedModel):
    config_class = ChatGLMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["GLMBlock"]


class ChatGLMModel(ChatGLMPreTrainedModel):
    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([GLMBlock(config) for _ in range(config.num_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)
        self.rotary = RotaryEmbedding2D(config.hidden_size // config.num_attention_heads // 2,
                                        fp16_frequencies=config.rotary_fp16_frequencies)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None,
                return_dict: Optional[bool] = None, **kwargs):
        past_key_values = given_cache(past_key_values, kwargs)
        position_ids, allowed = self.blank_inputs(input_ids, position_ids, attention_mask)
        hidden = self.word_embeddings(input_ids)
        tables = [self.rotary(position_ids[:, 0], hidden.dtype),
                  self.rotary(position_ids[:, 1], hidden.dtype)]
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, tables, allowed, past_key_values, index)
        hidden = self.final_layernorm(hidden)
        if return_dict is False:
            return (hidden,)
        return BaseModelOutputWithPast(last_hidden_state=hidden, **{CACHE_NAME: past_key_values})


class ChatGLMForConditionalGeneration(ChatGLMPreTrainedModel,
                                      BlankInfillingGenerationMixin):
    shift_labels = True  # published ChatGLM-6B: the target of position t is label t + 1

    def __init__(self, config: ChatGLMConfig):
        super().__init__(config)
        self.transformer = ChatGLMModel(config)
        # Published ChatGLM-6B ties its head to the word embeddings (tie_word_embeddings absent,
        # i.e. True); an untied export has its own lm_head.
        self.lm_head = (None if config.tie_word_embeddings else
                        nn.Linear(config.hidden_size, config.vocab_size, bias=False))
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None,
                labels: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None,
                **kwargs):
        past_key_values = given_cache(past_key_values, kwargs)
        hidden = self.transformer(input_ids, position_ids, attention_mask,
                                  past_key_values).last_hidden_state
        head = self.transformer.word_embeddings if self.lm_head is None else self.lm_head
        return self.lm_output(F.linear(hidden, head.weight), labels, past_key_values,
                              return_dict)
