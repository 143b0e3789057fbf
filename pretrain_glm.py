"""Pretrain a GLM model.

    python pretrain_glm.py                          # built-in corpus, small GLM, CPU
    torchrun --nproc_per_node 2 pretrain_glm.py --tensor-model-parallel-size 2 ...

Flags follow Megatron-LM's names; `python pretrain_glm.py --help` lists them all.
"""

import os
import sys

import glm_megatron  # noqa: F401  (quiets megatron-core's import-time warnings)
from glm_megatron.arguments import parse_args
from glm_megatron.config import ConfigError


def _say(text: str):
    # Every rank meets the same error; rank 0 speaks for the job.
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"pretrain_glm.py: {text}", file=sys.stderr)


def main(argv=None) -> int:
    try:
        args = parse_args(argv)  # --help answers here, before torch is imported
    except ConfigError as error:
        _say(f"error: {error}")
        return 2
    from glm_megatron.training.divergence import TrainingDiverged
    from glm_megatron.training.pretrain import RUN_ERRORS, Interrupted, pretrain
    try:
        pretrain(args)
    except Interrupted as stop:
        _say(str(stop))
        return 130  # as a shell reports Ctrl-C
    except RUN_ERRORS as error:
        _say(f"error: {error}")
        return 3 if isinstance(error, TrainingDiverged) else 2  # diverged, or bad input
    return 0


if __name__ == "__main__":
    sys.exit(main())
