"""What the tools that read or write checkpoints share: help formatting, the layer-placement
flags of the checkpoint they write, the run's tokenizer, and turning a ConversionError into one
line and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from .errors import ConversionError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except where there is none to show."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_layer_split_flags(group):
    """pretrain_glm.py's placement of layers over pipeline stages, for the checkpoint written:
    give the values the run that loads it is launched with."""
    group.add_argument("--target-num-layers-per-virtual-pipeline-stage", type=int,
                       help="layers per virtual pipeline stage (interleaved 1F1B) of the run "
                            "that loads the checkpoint")
    group.add_argument("--target-decoder-first-pipeline-num-layers", type=int,
                       help="layers on the first pipeline stage of the run that loads it")
    group.add_argument("--target-decoder-last-pipeline-num-layers", type=int,
                       help="layers on the last pipeline stage of the run that loads it")


def layer_split_kwargs(args) -> dict:
    return {"layers_per_virtual_stage": args.target_num_layers_per_virtual_pipeline_stage,
            "first_stage_layers": args.target_decoder_first_pipeline_num_layers,
            "last_stage_layers": args.target_decoder_last_pipeline_num_layers}


def check_positive(args, *names: str):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConversionError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def checkpoint_tokenizer(reader, tokenizer_model=None):
    """The tokenizer a checkpoint's run trained with (`reader`: a CheckpointReader), or the
    --tokenizer-model given instead."""
    from ..data.tokenizer import GLMTokenizer

    path = tokenizer_model or reader.tokenizer_path
    if not path or not os.path.isfile(path):
        raise ConversionError(f"--tokenizer-model: the run's tokenizer {path!r} is not there; "
                              "give the SentencePiece .model it trained with")
    try:
        return GLMTokenizer(path)
    except ValueError as error:
        raise ConversionError(f"--tokenizer-model {error}") from None


def run(body: Callable[[], None]) -> int:
    """Run a tool's body: 0 on success; bad input -> `error: ...` on stderr and status 2."""
    try:
        body()
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def log(text: str):
    print(text, flush=True)
