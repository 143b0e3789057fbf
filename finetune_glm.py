"""Finetune and evaluate a GLM model on a classification or multiple-choice task.

    python finetune_glm.py --task text-classification --pretrained-checkpoint runs/builtin/checkpoints \
        --train-data train.jsonl --valid-data valid.jsonl --epochs 3 --save runs/ft
    torchrun --nproc_per_node 2 finetune_glm.py --tensor-model-parallel-size 2 ...

The architecture and tokenizer come from --pretrained-checkpoint; `python finetune_glm.py
--help` lists the flags (Megatron-LM's names).
"""

import sys

import glm_megatron  # noqa: F401  (quiets megatron-core's import-time warnings)
from glm_megatron.config import ConfigError
from glm_megatron.convert.errors import ConversionError
from glm_megatron.finetune.errors import FinetuneDataError
from glm_megatron.finetune.runner import finetune
from glm_megatron.training.checkpointing import CheckpointError


def main(argv=None) -> int:
    try:
        finetune(argv)
    except (ConfigError, FinetuneDataError, CheckpointError, ConversionError) as error:
        print(f"finetune_glm.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
