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
from transformers import PreTrainedModel
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, CausalLMOutput

from .blank_infilling import resolve_inputs
from .configuration_glm import GLMConfig


class GLMSelfAttention(nn.Module):
    def __init__(self, config: GLMConfig):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.dropout = config.attention_dropout_prob
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = hidden.shape
        query, key, value = (t.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)
                             for t in self.query_key_value(hidden).chunk(3, dim=-1))
        context = F.scaled_dot_product_attention(
            query, key, value, attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0)
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

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        hidden = hidden + self.dropout(self.attention(self.input_layernorm(hidden), allowed))
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

    def forward(self, embeddings, position_ids, allowed):
        hidden = embeddings + self.position_embeddings(position_ids[:, 0])
        if self.block_position_embeddings is not None:
            hidden = hidden + self.block_position_embeddings(position_ids[:, 1])
        hidden = self.embedding_dropout(hidden)
        for layer in self.layers:
            hidden = layer(hidden, allowed)
        return self.final_layernorm(hidden)


class GLMPreTrainedModel(PreTrainedModel):
    config_class = GLMConfig
    base_model_prefix = "glm"
    _no_split_modules = ["GLMTransformerLayer"]

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class GLMModel(GLMPreTrainedModel):
    """Word embeddings + transformer; returns the final hidden states."""

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.transformer = GLMStack(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.word_embeddings

    def set_input_embeddings(self, value):
        self.word_embeddings = value

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None,
                **kwargs):
        c = self.config
        position_ids, allowed = resolve_inputs(
            input_ids, position_ids, attention_mask, c.bos_token_id,
            [c.mask_token_id, c.smask_token_id, c.gmask_token_id])
        hidden = self.transformer(self.word_embeddings(input_ids), position_ids, allowed)
        if return_dict is False:
            return (hidden,)
        return BaseModelOutput(last_hidden_state=hidden)


class GLMForConditionalGeneration(GLMPreTrainedModel, GenerationMixin):
    """GLM with its language-model head (the word embeddings, tied)."""

    def __init__(self, config: GLMConfig):
        super().__init__(config)
        self.glm = GLMModel(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.glm.word_embeddings

    def set_input_embeddings(self, value):
        self.glm.word_embeddings = value

    def forward(self, input_ids: torch.Tensor, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, return_dict: Optional[bool] = None,
                **kwargs):
        hidden = self.glm(input_ids, position_ids, attention_mask).last_hidden_state
        logits = F.linear(hidden, self.glm.word_embeddings.weight)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                   labels.reshape(-1), ignore_index=-100)
        if return_dict is False:
            return (loss, logits) if loss is not None else (logits,)
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No key/value cache: every step reruns the whole input, whose positions and mask are
        # derived from the ids (the blank's sop onwards is Part B).
        return {"input_ids": input_ids, "attention_mask": attention_mask}
