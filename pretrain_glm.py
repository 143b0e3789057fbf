"""Pretrain a GLM model.

    python pretrain_glm.py                          # built-in corpus, small GLM, CPU
    torchrun --nproc_per_node 2 pretrain_glm.py --tensor-model-parallel-size 2 ...

Flags follow Megatron-LM's names; `python pretrain_glm.py --help` lists them all.
"""

import os
import sys

import glm_megatron  # noqa: F401  (quiets megatron-core's import-time warnings)
from glm_megatron.training.divergence import TrainingDiverged
from glm_megatron.training.pretrain import RUN_ERRORS, pretrain


def main(argv=None) -> int:
    try:
        pretrain(argv)
    except RUN_ERRORS as error:
        # Every rank meets the same error; rank 0 speaks for the job.
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"pretrain_glm.py: error: {error}", file=sys.stderr)
        return 3 if isinstance(error, TrainingDiverged) else 2  # diverged, or bad input
    return 0


if __name__ == "__main__":
    sys.exit(main())
