"""The GLM model: embeddings, transformer block and the two heads.

Batches are dicts (see `glm_megatron.data`): tokens [b, s]; position_ids [b, s] or [b, 2, s]
(position, block position); optional sep [b] (bidirectional over the first sep tokens, causal
after; absent = causal); labels [b, s] aligned with tokens; loss_mask [b, s].
Hidden states inside the model are [s, b, h], as in megatron-core ([s / tp, b, h] between
sublayers under sequence parallelism). A pipeline stage holds the embedding only if it is the
first (`pre_process`) and the final norm and head only if it is the last (`post_process`).
"""

from __future__ import annotations

from typing import Optional

import torch

from ..config import GLMConfig
from ..param_names import WORD_EMBEDDINGS
from ..parallel.context import ParallelContext
from ..parallel.param_roles import set_role
from ..parallel.sequence import gather_sequence
from .attention import glm_attention_mask
from .embedding import Embedding
from ..parallel.cross_entropy import chunked_vocab_parallel_cross_entropy
from .layers import ColumnParallelLinear
from .options import ExecutionOptions
from .rotary import RotaryEmbedding
from .transformer import TransformerBlock


def split_position_ids(position_ids: torch.Tensor):
    """[b, 2, s] -> (positions, block positions); [b, s] -> (positions, zeros)."""
    if position_ids.dim() == 3:
        return position_ids[:, 0], position_ids[:, 1]
    return position_ids, torch.zeros_like(position_ids)


class GLMModel(torch.nn.Module):
    """Embedding + transformer layers + final norm; returns hidden states."""

    def __init__(self, config: GLMConfig, ctx: ParallelContext,
                 options: ExecutionOptions = ExecutionOptions(),
                 layer_numbers: Optional[range] = None, pre_process: bool = True,
                 post_process: bool = True):
        super().__init__()
        self.config, self.ctx, self.options = config, ctx, options
        self.pre_process, self.post_process = pre_process, post_process
        sp = options.sequence_parallel
        self.embedding = Embedding(config, ctx, sp) if pre_process else None
        self.rotary = RotaryEmbedding(config) if config.position_embedding_type == "rope" else None
        numbers = layer_numbers if layer_numbers is not None else range(config.num_layers)
        self.decoder = TransformerBlock(config, ctx, numbers, post_process, options)

    def hidden_states(self, tokens, position_ids, sep=None,
                      decoder_input: Optional[torch.Tensor] = None, kv_cache=None) -> torch.Tensor:
        """First stage: embed `tokens`; later stages: continue from `decoder_input`. With a
        `kv_cache` (model.kv_cache.KVCache), `tokens` follow the cached ones."""
        positions, block_positions = split_position_ids(position_ids)
        hidden = (self.embedding(tokens, positions, block_positions) if self.pre_process
                  else decoder_input)
        tables = (self.rotary(positions, block_positions, hidden.dtype)
                  if self.rotary is not None else None)
        past = kv_cache.length if kv_cache is not None else 0
        mask = glm_attention_mask(sep, tokens.shape[1], tokens.device, past)
        return self.decoder(hidden, self.rotary, tables, mask, kv_cache)


class GLMForCausalLM(GLMModel):
    """GLM with the language-model head: vocab-parallel logits and per-token cross entropy."""

    def __init__(self, config: GLMConfig, ctx: ParallelContext,
                 options: ExecutionOptions = ExecutionOptions(),
                 layer_numbers: Optional[range] = None, pre_process: bool = True,
                 post_process: bool = True):
        super().__init__(config, ctx, options, layer_numbers, pre_process, post_process)
        self.tied = not config.untie_embeddings_and_output_weights
        self.output_layer = None
        if post_process:
            # A tied head on the embedding's own stage reuses its weight; on a later pipeline
            # stage it keeps a copy, drawn identically and kept equal by summing both copies'
            # gradients over the embedding group (Megatron-LM's scheme).
            share = self.tied and pre_process
            self.output_layer = ColumnParallelLinear(
                config.hidden_size, config.vocab_size, ctx, bias=False,
                sequence_parallel=options.sequence_parallel, skip_weight_param_allocation=share)
            if self.tied and not share:
                set_role(self.output_layer.weight, tied_copy_of=WORD_EMBEDDINGS)

    def _head_weight(self):
        return self.embedding.word_embeddings.weight if self.tied and self.pre_process else None

    def logits(self, tokens, position_ids, sep=None, kv_cache=None,
               last_only: bool = False) -> torch.Tensor:
        """Vocab-parallel logits [s, b, vocab / tp] (single-stage models), or [1, b, ...] for
        the last position only (generation); see hidden_states for `kv_cache`."""
        hidden = self.hidden_states(tokens, position_ids, sep, kv_cache=kv_cache)
        if last_only:
            hidden = hidden[-1:]
        logits, _ = self.output_layer(hidden, weight=self._head_weight())
        return logits

    def forward(self, batch: dict, decoder_input: Optional[torch.Tensor] = None):
        """On the last stage, fp32 cross entropies: of `labels` [b, s] at every position, or,
        when the batch has `target_positions` and `target_ids` [b, n], of each target id at its
        position ([b, n]: e.g. several candidate tokens scored at one position, without the
        logits of any other position). Hidden states on earlier stages."""
        hidden = self.hidden_states(batch["tokens"], batch["position_ids"], batch.get("sep"),
                                    decoder_input)
        if not self.post_process:
            return hidden
        hidden = self.output_layer.parallel_input(hidden)  # whole sequence, TP-replicated
        if "target_positions" in batch:
            columns = torch.arange(hidden.shape[1], device=hidden.device)[:, None]
            hidden = hidden[batch["target_positions"].t(), columns.t()]  # [n, b, h]
            labels = batch["target_ids"]
        else:
            labels = batch["labels"]
        weight = self._head_weight()
        weight = self.output_layer.weight if weight is None else weight
        # Fused with the output layer's matmul: the [s, b, vocab / tp] logits exist one chunk
        # at a time, never as a whole fp32 copy.
        return chunked_vocab_parallel_cross_entropy(hidden, weight, labels, self.ctx.tp_group)


class GLMForSequenceClassification(GLMModel):
    """GLM with transformers' sequence-classification head: `score` applied to the rightmost
    token that is not padding (GlmForSequenceClassification's pooling)."""

    def __init__(self, config: GLMConfig, ctx: ParallelContext, num_labels: int,
                 pad_token_id: int, options: ExecutionOptions = ExecutionOptions()):
        super().__init__(config, ctx, options)
        self.pad_token_id = pad_token_id
        self.score = torch.nn.Linear(config.hidden_size, num_labels, bias=False)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits [b, num_labels] of the rightmost non-pad token of each row."""
        tokens = batch["tokens"]
        hidden = self.hidden_states(tokens, batch["position_ids"], batch.get("sep"))
        if self.options.sequence_parallel:
            hidden = gather_sequence(hidden, self.ctx.tp_group, replicated_grad=True)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        last = (positions * (tokens != self.pad_token_id)).argmax(dim=-1)  # [b]
        pooled = hidden[last, torch.arange(tokens.shape[0], device=tokens.device)]
        return self.score(pooled)
