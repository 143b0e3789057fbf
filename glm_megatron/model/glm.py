"""The GLM model: embeddings, transformer block and the two heads.

Batches are dicts (see `glm_megatron.data`): tokens [b, s]; position_ids [b, s] or [b, 2, s]
(position, block position); optional sep [b] (bidirectional over the first sep tokens, causal
after; absent = causal); labels [b, s] aligned with tokens; loss_mask [b, s].
Hidden states inside the model are [s, b, h], as in megatron-core.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import parallel_state as mpu
from megatron.core import tensor_parallel

from ..config import GLMConfig
from .attention import glm_attention_mask
from .embedding import Embedding
from .layers import mark_partitioned, no_init
from .rotary import RotaryEmbedding
from .transformer import TransformerBlock


def split_position_ids(position_ids: torch.Tensor):
    """[b, 2, s] -> (positions, block positions); [b, s] -> (positions, zeros)."""
    if position_ids.dim() == 3:
        return position_ids[:, 0], position_ids[:, 1]
    return position_ids, torch.zeros_like(position_ids)


class GLMModel(torch.nn.Module):
    """Embedding + transformer layers + final norm; returns hidden states [s, b, h]."""

    def __init__(self, config: GLMConfig, mp, tp_size: int,
                 layer_numbers: Optional[range] = None):
        super().__init__()
        self.config = config
        self.embedding = Embedding(config, mp)
        self.rotary = RotaryEmbedding(config) if config.position_embedding_type == "rope" else None
        numbers = layer_numbers if layer_numbers is not None else range(config.num_layers)
        self.decoder = TransformerBlock(config, mp, tp_size, numbers, final_norm=True)

    def hidden_states(self, tokens, position_ids, sep=None) -> torch.Tensor:
        positions, block_positions = split_position_ids(position_ids)
        hidden = self.embedding(tokens, positions, block_positions)
        tables = (self.rotary(positions, block_positions, hidden.dtype)
                  if self.rotary is not None else None)
        mask = glm_attention_mask(sep, tokens.shape[1], tokens.device)
        return self.decoder(hidden, self.rotary, tables, mask)


class GLMForCausalLM(GLMModel):
    """GLM with the language-model head: vocab-parallel logits and cross entropy."""

    def __init__(self, config: GLMConfig, mp, tp_size: int,
                 layer_numbers: Optional[range] = None):
        super().__init__(config, mp, tp_size, layer_numbers)
        tied = not config.untie_embeddings_and_output_weights
        self.output_layer = tensor_parallel.ColumnParallelLinear(
            config.hidden_size, config.vocab_size, config=mp, init_method=no_init,
            tp_group=mpu.get_tensor_model_parallel_group(),
            bias=False, gather_output=False, skip_weight_param_allocation=tied)
        if not tied:
            mark_partitioned(self.output_layer.weight, 0)

    def logits(self, tokens, position_ids, sep=None) -> torch.Tensor:
        """Vocab-parallel logits [s, b, vocab / tp]."""
        hidden = self.hidden_states(tokens, position_ids, sep)
        weight = (None if self.config.untie_embeddings_and_output_weights
                  else self.embedding.word_embeddings.weight)
        logits, _ = self.output_layer(hidden, weight=weight)
        return logits

    def forward(self, batch: dict) -> torch.Tensor:
        """Mean cross entropy over the tokens the loss mask selects."""
        logits = self.logits(batch["tokens"], batch["position_ids"], batch.get("sep"))
        labels = batch["labels"].transpose(0, 1).contiguous()
        per_token = tensor_parallel.vocab_parallel_cross_entropy(logits.float(), labels)
        loss_mask = batch["loss_mask"].transpose(0, 1).float()
        return (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)


class GLMForSequenceClassification(GLMModel):
    """GLM with transformers' sequence-classification head: `score` applied to the rightmost
    token that is not padding (GlmForSequenceClassification's pooling)."""

    def __init__(self, config: GLMConfig, mp, tp_size: int, num_labels: int, pad_token_id: int,
                 layer_numbers: Optional[range] = None):
        super().__init__(config, mp, tp_size, layer_numbers)
        self.pad_token_id = pad_token_id
        self.score = torch.nn.Linear(config.hidden_size, num_labels, bias=False)

    def pooled_logits(self, tokens, position_ids, sep=None) -> torch.Tensor:
        hidden = self.hidden_states(tokens, position_ids, sep)  # [s, b, h]
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        last = (positions * (tokens != self.pad_token_id)).argmax(dim=-1)  # [b]
        pooled = hidden[last, torch.arange(tokens.shape[0], device=tokens.device)]
        return self.score(pooled)

    def forward(self, batch: dict) -> torch.Tensor:
        logits = self.pooled_logits(batch["tokens"], batch["position_ids"], batch.get("sep"))
        return F.cross_entropy(logits.float(), batch["labels"])
