"""The model a finetuning run starts from (`--pretrained-checkpoint`): its architecture,
tokenizer and input convention, and its weights loaded at this run's own layout.

The checkpoint may come from pretrain_glm.py at any TP x PP x DP layout, from an import with
tools/checkpoint/convert.py, or from finetune_glm.py itself. Weights are read as full tensors
(CheckpointReader joins the saved shards) and each rank keeps its own slice, so no resharding
step is needed; a parameter the checkpoint lacks is an error, except a new classifier's score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from ..checkpoint_format import recorded_tokenizer
from ..config import ConfigError, GLMConfig
from ..convert.checkpoint import CheckpointReader
from ..convert.mapping import groups
from ..param_names import SCORE
from ..data.tokenizer import GLMTokenizer
from ..parallel.context import ParallelContext
from ..parallel.param_roles import role_of
from ..parallel.sharding import full_shape, shard
from ..training.checkpointing import CheckpointError
from .settings import FinetuneSettings, saved_settings

FLAG = "--pretrained-checkpoint"


@dataclass
class Pretrained:
    reader: CheckpointReader
    tokenizer: GLMTokenizer
    prepend_cls: bool  # whether its inputs started with [CLS]
    settings: Optional[FinetuneSettings]  # when finetune_glm.py wrote it

    @property
    def config(self) -> GLMConfig:
        return self.reader.config

    @property
    def is_classifier(self) -> bool:
        return self.reader.head.is_classifier

    @property
    def path(self) -> str:
        return self.reader.root


def _tokenizer_path(reader: CheckpointReader, override: Optional[str], root: str) -> str:
    if override is not None:
        if not os.path.isfile(override):
            raise ConfigError(f"--tokenizer-model {override} does not exist; give the "
                              "SentencePiece .model the checkpoint was trained with")
        return override
    found = recorded_tokenizer(reader.metadata)
    if found is not None:
        return found
    source = reader.metadata.converted_from
    recorded = reader.tokenizer_path or os.path.join(source or "", "tokenizer.model")
    raise ConfigError(f"{FLAG} {root} names no tokenizer that exists here (recorded: "
                      f"{recorded}); pass --tokenizer-model with the SentencePiece "
                      ".model it was trained with")


def read_pretrained(path: str, tokenizer_model: Optional[str] = None) -> Pretrained:
    """The one place that reads a checkpoint's architecture, tokenizer and [CLS] convention
    from its metadata (no weights are read)."""
    reader = CheckpointReader(path, flag=FLAG)
    tokenizer_path = _tokenizer_path(reader, tokenizer_model, path)
    try:
        tokenizer = GLMTokenizer(tokenizer_path)
    except ValueError as error:
        raise ConfigError(f"--tokenizer-model {error}") from None
    if tokenizer.vocab_size > reader.config.vocab_size:
        raise ConfigError(f"the tokenizer {tokenizer_path} has {tokenizer.vocab_size} tokens but "
                          f"{FLAG} {path} holds {reader.config.vocab_size}; use the model's "
                          "own tokenizer (--tokenizer-model)")
    return Pretrained(reader, tokenizer, reader.prepends_cls, saved_settings(reader.metadata))


@torch.no_grad()
def load_weights(model: torch.nn.Module, reader: CheckpointReader, ctx: ParallelContext,
                 flag: str = FLAG) -> list[str]:
    """Copy the checkpoint's weights into this rank's parameters (its TP slice of each full
    tensor), one layer at a time. Returns the parameters the checkpoint has no tensor for and
    that keep their fresh initialisation: a classifier's score on top of a language model."""
    params = dict(model.named_parameters())
    # A tied head on a later pipeline stage is a copy of the word embeddings.
    sources = {name: role_of(p).tied_copy_of or name for name, p in params.items()}
    fresh = [name for name, source in sources.items() if source not in reader.entries]
    if set(fresh) - {SCORE}:
        missing = sorted(set(fresh) - {SCORE})
        raise CheckpointError(f"{flag} {reader.root} has no {', '.join(missing[:4])}: it holds "
                              f"a {'classifier' if reader.head.is_classifier else 'model'} "
                              "that this head cannot start from; give a language-model "
                              "checkpoint")
    for group in groups(reader.config):
        in_group = set(reader.group_names(group))
        wanted = {name: source for name, source in sources.items() if source in in_group}
        tensors = reader.read(sorted(set(wanted.values())))
        for name, source in wanted.items():
            param, full = params[name], tensors[source]
            if tuple(full.shape) != full_shape(param, ctx.tp_size):
                raise CheckpointError(
                    f"{flag} {reader.root}: {source} has shape {list(full.shape)}, but this run "
                    f"needs {list(full_shape(param, ctx.tp_size))}" +
                    ("; its classifier has another number of labels than the data: start from "
                     "a language-model checkpoint" if source == SCORE else ""))
            spec = role_of(param).partition
            local = full if spec is None else shard(full, spec[0], spec[1], ctx.tp_rank,
                                                    ctx.tp_size)
            param.copy_(local)
    return fresh
