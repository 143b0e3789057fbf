"""Token embeddings (vocab-parallel) plus GLM's learned absolute 2D position tables."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import torch.nn.functional as F

from ..config import GLMConfig
from ..parallel.context import ParallelContext
from ..parallel.sequence import split_sequence
from .layers import VocabParallelEmbedding


class Embedding(torch.nn.Module):
    def __init__(self, config: GLMConfig, ctx: ParallelContext, sequence_parallel: bool = False):
        super().__init__()
        self.dropout = config.hidden_dropout
        self.gradient_shrink = config.embedding_gradient_shrink_alpha
        self.ctx, self.sequence_parallel = ctx, sequence_parallel
        self.word_embeddings = VocabParallelEmbedding(config.vocab_size, config.hidden_size, ctx)
        self.position_embeddings = self.block_position_embeddings = None
        if config.position_embedding_type == "learned_absolute":
            self.position_embeddings = torch.nn.Embedding(
                config.max_position_embeddings, config.hidden_size)
            if config.block_position_encoding:
                self.block_position_embeddings = torch.nn.Embedding(
                    config.max_position_embeddings, config.hidden_size)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor,
                block_position_ids: Optional[torch.Tensor]) -> torch.Tensor:
        """tokens, positions [b, s] -> embeddings [s, b, h] ([s / tp, b, h] sequence-parallel)."""
        # Looked up in [s, b] order: the rows come out in the model's layout, with no transpose
        # copy of the [b, s, h] result.
        embeddings = self.word_embeddings(tokens.t())
        if self.position_embeddings is not None:
            embeddings = embeddings + self.position_embeddings(position_ids.t())
        if self.block_position_embeddings is not None:
            embeddings = embeddings + self.block_position_embeddings(block_position_ids.t())
        if self.gradient_shrink != 1.0:  # GLM-130B: same value, gradient scaled by alpha
            alpha = self.gradient_shrink
            embeddings = embeddings * alpha + embeddings.detach() * (1.0 - alpha)
        if self.sequence_parallel:
            embeddings = split_sequence(embeddings, self.ctx.tp_group)
        # Sequence shards differ across TP ranks, so their dropout masks must differ too.
        rng = (self.ctx.rng.fork() if self.sequence_parallel and self.training and self.dropout
               else contextlib.nullcontext())
        with rng:
            return F.dropout(embeddings, p=self.dropout, training=self.training)
