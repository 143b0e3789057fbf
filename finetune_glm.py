"""Finetune and evaluate a GLM model on a classification or multiple-choice task.

    python finetune_glm.py --task text-classification --pretrained-checkpoint runs/builtin/checkpoints \
        --train-data train.jsonl --valid-data valid.jsonl --epochs 3 --save runs/ft
    torchrun --nproc_per_node 2 finetune_glm.py --tensor-model-parallel-size 2 ...

The architecture and tokenizer come from --pretrained-checkpoint; `python finetune_glm.py
--help` lists the flags (Megatron-LM's names).
"""

import sys

from glm_megatron import entry_point
from glm_megatron.finetune.arguments import parse_args


def _job():
    from glm_megatron.convert.errors import ConversionError
    from glm_megatron.finetune.errors import FinetuneDataError
    from glm_megatron.finetune.runner import finetune
    return finetune, (FinetuneDataError, ConversionError)


def main(argv=None) -> int:
    return entry_point.run("finetune_glm.py", parse_args, _job, argv)


if __name__ == "__main__":
    sys.exit(main())
