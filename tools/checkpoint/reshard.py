#!/usr/bin/env python
"""Rewrite a checkpoint at another tensor/pipeline-parallel layout, optimizer state included.

    python tools/checkpoint/reshard.py --load-dir runs/builtin/checkpoints \\
        --save-dir checkpoints/tp1-pp2 \\
        --target-tensor-parallel-size 1 --target-pipeline-parallel-size 2

`--load` of pretrain_glm.py accepts a checkpoint saved at another data-parallel size (or with
or without the distributed optimizer) directly; a different TP or PP size needs this tool first.
The run then continues from the same iteration with the same weights, fp32 master weights and
Adam moments. RNG states are not carried over.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from glm_megatron.convert.cli import (HelpFormatter, add_layer_split_flags,  # noqa: E402
                                      check_positive, layer_split_kwargs, log, run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/checkpoint/reshard.py",
        description="Write a glm_megatron checkpoint at a new TP x PP layout (any DP size loads "
                    "it), with the optimizer state resharded per parameter.",
        formatter_class=HelpFormatter)
    parser.add_argument("--load-dir", required=True,
                        help="checkpoint directory (a run's --save) or one iter_XXXXXXX directory")
    parser.add_argument("--save-dir", required=True,
                        help="output checkpoint directory; must not exist or be empty")
    parser.add_argument("--target-tensor-parallel-size", type=int, required=True,
                        help="tensor-parallel size of the checkpoint written")
    parser.add_argument("--target-pipeline-parallel-size", type=int, required=True,
                        help="pipeline-parallel size of the checkpoint written")
    add_layer_split_flags(parser)
    parser.add_argument("--iteration", type=int,
                        help="iteration to reshard (default: the tracker's latest)")
    parser.add_argument("--no-optimizer", action="store_true",
                        help="drop the optimizer state (the result then loads with "
                             "--finetune or --no-load-optim only)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a --save-dir that exists and is not empty")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    def body():
        check_positive(args, "target_tensor_parallel_size", "target_pipeline_parallel_size",
                       "target_num_layers_per_virtual_pipeline_stage",
                       "target_decoder_first_pipeline_num_layers",
                       "target_decoder_last_pipeline_num_layers")
        from glm_megatron.convert.reshard import reshard_checkpoint
        reshard_checkpoint(args.load_dir, args.save_dir,
                           tensor_parallel=args.target_tensor_parallel_size,
                           pipeline_parallel=args.target_pipeline_parallel_size,
                           **layer_split_kwargs(args), iteration=args.iteration,
                           optimizer=not args.no_optimizer, overwrite=args.overwrite,
                           progress=not args.no_progress, log=log)

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
