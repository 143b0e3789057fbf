"""Pretrain a GLM model.

    python pretrain_glm.py                          # built-in corpus, small GLM, CPU
    torchrun --nproc_per_node 2 pretrain_glm.py --tensor-model-parallel-size 2 ...

Flags follow Megatron-LM's names; `python pretrain_glm.py --help` lists them all.
"""

import sys

import glm_megatron  # noqa: F401  (quiets megatron-core's import-time warnings)
from glm_megatron.config import ConfigError
from glm_megatron.data.datasets import DataError
from glm_megatron.training.checkpointing import CheckpointError
from glm_megatron.training.pretrain import pretrain


def main(argv=None) -> int:
    try:
        pretrain(argv)
    except (ConfigError, DataError, CheckpointError) as error:
        print(f"pretrain_glm.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
