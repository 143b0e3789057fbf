"""GLM (glm-large, glm-10b) for transformers, in the published glm-10b key layout.

Pre-LayerNorm transformer with learned absolute 2D positions (position + block position tables
summed with the word embeddings), fused QKV laid out [Q_all; K_all; V_all], tanh GeLU MLP, and an
output layer tied to the word embeddings. Inputs follow blank infilling (see blank_infilling.py):
pass `position_ids` [b, 2, s] and `attention_mask` = sep [b] explicitly, or let them be derived
from the input ids (Part B starts at the first sop token). `labels` are aligned with the inputs
(the target of position t sits at t), as GLM's data pipeline produces them; -100 is ignored.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast

from .blank_infilling_lm import (CACHE_NAME, BlankInfillingGenerationMixin,
                                 BlankInfillingPreTrainedModel, cached_attention, given_cache)
from .configuration_glm import GLMConfig


class GLMSelfAttention(nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout_prob
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor, past_key_values,
                layer_idx: int) -> torch.Tensor:
        batch, seq, _ = hidden.shape
        query, key, value = (t.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
                             for t in self.query_key_value(hidden).chunk(3, dim=-1))
        context = cached_attention(query, key, value, allowed, past_key_values, layer_idx,
                                   self.dropout if self.training else 0.0)
        return self.dense(context.transpose(1, 2).reshape(batch, seq, -1))


class GLMMLP(nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dense_4h_to_h(F.gelu(self.dense_h_to_4h(hidden), approximate="tanh"))


class GLMTransformerLayer(nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        eps = config.layernorm_epsilon
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.attention = GLMSelfAttention(config)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = GLMMLP(config)
        self.dropout = nn.Dropout(config.output_dropout_prob)

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor, past_key_values,
                layer_idx: int) -> torch.Tensor:
        attention = self.attention(self.input_layernorm(hidden), allowed, past_key_values,
                                   layer_idx)
        hidden = hidden + self.dropout(attention)
        return hidden + self.dropout(self.mlp(self.post_attention_layernorm(hidden)))


class GLMStack(nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        rows = config.max_sequence_length + 1
        self.position_embeddings = nn.Embedding(rows, config.hidden_size)
        self.block_position_embeddings = (nn.Embedding(rows, config.hidden_size)
                                          if config.block_position_encoding else None)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout_prob)
        self.layers = nn.ModuleList([GLMTransformerLayer(config)
                                     for _ in range(config.num_layers)])
        self.final_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layernorm_epsilon)

    def forward(self, embeddings, position_ids, allowed, past_key_values=None):
        hidden = embeddings + self.position_embeddings(position_ids[:, 0])
        if self.block_position_embeddings is not None:
            hidden = hidden + self.block_position_embeddings(position_ids[:, 1])
        hidden = self.embedding_dropout(hidden)
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, allowed, past_key_values, index)
        return self.final_layernorm(hidden)


class GLMPreTrainedModel(BlankInfillingPreTrainedModel):
    config_class = GLMConfig
    base_model_prefix = "glm"
    _no_split_modules = ["GLMTransformerLayer"]


class GLMModel(GLMPreTrainedModel):
    """Word embeddings + transformer; returns the final hidden states."""

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.transformer = GLMStack(config)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None,
                return_dict: Optional[bool] = None, **kwargs):
        past_key_values = given_cache(past_key_values, kwargs)
        position_ids, allowed = self.blank_inputs(input_ids, position_ids, attention_mask)
        hidden = self.transformer(self.word_embeddings(input_ids), position_ids, allowed,
                                  past_key_values)
        if return_dict is False:
            return (hidden,)
        return BaseModelOutputWithPast(last_hidden_state=hidden, **{CACHE_NAME: past_key_values})


class GLMForConditionalGeneration(GLMPreTrainedModel, BlankInfillingGenerationMixin):
    """GLM with its language-model head (the word embeddings, tied)."""

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.glm = GLMModel(config)
        self.post_init()

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, past_key_values=None,
                labels: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None,
                **kwargs):
        past_key_values = given_cache(past_key_values, kwargs)
        hidden = self.glm(input_ids, position_ids, attention_mask,
                          past_key_values).last_hidden_state
        logits = F.linear(hidden, self.glm.word_embeddings.weight)
        return self.lm_output(logits, labels, past_key_values, return_dict)
