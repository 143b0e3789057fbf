"""Pretrain a GLM model.

    python pretrain_glm.py                          # built-in corpus, small GLM, CPU
    torchrun --nproc_per_node 2 pretrain_glm.py --tensor-model-parallel-size 2 ...

Flags follow Megatron-LM's names; `python pretrain_glm.py --help` lists them all.
"""

import sys

from glm_megatron import entry_point
from glm_megatron.arguments import parse_args


def _job():
    from glm_megatron.training.pretrain import pretrain
    return pretrain, ()


def main(argv=None) -> int:
    return entry_point.run("pretrain_glm.py", parse_args, _job, argv)


if __name__ == "__main__":
    sys.exit(main())
