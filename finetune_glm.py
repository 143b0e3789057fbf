"""Finetune and evaluate a GLM model on a classification or multiple-choice task.

    python finetune_glm.py --task text-classification --pretrained-checkpoint runs/builtin/checkpoints \
        --train-data train.jsonl --valid-data valid.jsonl --epochs 3 --save runs/ft
    torchrun --nproc_per_node 2 finetune_glm.py --tensor-model-parallel-size 2 ...

The architecture and tokenizer come from --pretrained-checkpoint; `python finetune_glm.py
--help` lists the flags (Megatron-LM's names).
"""

import os
import sys

import glm_megatron  # noqa: F401  (quiets megatron-core's import-time warnings)
from glm_megatron.config import ConfigError
from glm_megatron.finetune.arguments import parse_args


def _say(text: str):
    # Every rank meets the same error; rank 0 speaks for the job.
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"finetune_glm.py: {text}", file=sys.stderr)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)  # --help answers here, before torch is imported
    except ConfigError as error:
        _say(f"error: {error}")
        return 2
    from glm_megatron.convert.errors import ConversionError
    from glm_megatron.finetune.errors import FinetuneDataError
    from glm_megatron.finetune.runner import finetune
    from glm_megatron.training.divergence import TrainingDiverged
    from glm_megatron.training.pretrain import RUN_ERRORS, Interrupted
    try:
        finetune(args)
    except Interrupted as stop:
        _say(str(stop))
        return 130  # as a shell reports Ctrl-C
    except (*RUN_ERRORS, FinetuneDataError, ConversionError) as error:
        _say(f"error: {error}")
        return 3 if isinstance(error, TrainingDiverged) else 2  # diverged, or bad input
    return 0


if __name__ == "__main__":
    sys.exit(main())
