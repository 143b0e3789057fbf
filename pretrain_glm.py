"""Pretrain a GLM model.

    python pretrain_glm.py                          # built-in corpus, small GLM, CPU
    torchrun --nproc_per_node 2 pretrain_glm.py --tensor-model-parallel-size 2 ...

Flags follow Megatron-LM's names; `python pretrain_glm.py --help` lists them all.
"""

import os
import sys

import glm_megatron  # noqa: F401  (quiets megatron-core's import-time warnings)
from glm_megatron.config import ConfigError
from glm_megatron.data.datasets import DataError
from glm_megatron.training.checkpointing import CheckpointError
from glm_megatron.training.divergence import TrainingDiverged
from glm_megatron.training.pretrain import pretrain

# Exit status per failure: bad input (flags, data, checkpoint) or a diverged run.
EXIT_STATUS = {ConfigError: 2, DataError: 2, CheckpointError: 2, TrainingDiverged: 3}


def main(argv=None) -> int:
    try:
        pretrain(argv)
    except tuple(EXIT_STATUS) as error:
        # Every rank meets the same error; rank 0 speaks for the job.
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"pretrain_glm.py: error: {error}", file=sys.stderr)
        return next(code for kind, code in EXIT_STATUS.items() if isinstance(error, kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
