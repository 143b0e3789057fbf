#!/usr/bin/env python
"""Convert between our checkpoints and Hugging Face model directories.

    # export (any TP x PP x DP layout, with or without the distributed optimizer)
    python tools/checkpoint/convert.py --direction megatron-to-hf \\
        --load-dir runs/builtin/checkpoints --save-dir hf/glm4-small

    # import, written at the TP x PP layout the next run uses
    python tools/checkpoint/convert.py --direction hf-to-megatron \\
        --load-dir hf/glm4-small --save-dir checkpoints/imported \\
        --target-tensor-parallel-size 2 --target-pipeline-parallel-size 1

Bad input prints one line naming the flag or file and the fix, exits with status 2 and leaves
nothing behind: outputs are staged beside the target and renamed into place at the end.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from glm_megatron.convert.cli import (HelpFormatter, add_layer_split_flags,  # noqa: E402
                                      check_positive, layer_split_kwargs, log, run)
from glm_megatron.convert.errors import ConversionError  # noqa: E402
from glm_megatron.convert.layouts import LAYOUTS  # noqa: E402

DIRECTIONS = ("megatron-to-hf", "hf-to-megatron")


def build_parser() -> argparse.ArgumentParser:
    layouts = "; ".join(f"{name}: {layout.description}" for name, layout in LAYOUTS.items())
    parser = argparse.ArgumentParser(
        prog="tools/checkpoint/convert.py",
        description="Convert a glm_megatron checkpoint to a Hugging Face model directory "
                    "(megatron-to-hf) or a Hugging Face directory to a glm_megatron checkpoint "
                    "(hf-to-megatron). Layouts: " + layouts + ".",
        formatter_class=HelpFormatter)
    parser.add_argument("--direction", required=True, choices=DIRECTIONS,
                        help="megatron-to-hf: export our checkpoint; hf-to-megatron: import")
    parser.add_argument("--load-dir", required=True,
                        help="megatron-to-hf: a checkpoint directory (a run's --save, holding "
                             "latest_checkpointed_iteration.txt) or one iter_XXXXXXX directory; "
                             "hf-to-megatron: a Hugging Face model directory with config.json")
    parser.add_argument("--save-dir", required=True,
                        help="output directory; must not exist or be empty (see --overwrite)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a --save-dir that exists and is not empty")
    parser.add_argument("--hf-layout", choices=list(LAYOUTS),
                        help="megatron-to-hf: the layout to write (default: the model's "
                             "generation: glm, glm4, glm-10b or chatglm-6b); hf-to-megatron: "
                             "read the directory as this layout instead of detecting it from "
                             "config.json")
    g = parser.add_argument_group("megatron-to-hf")
    g.add_argument("--iteration", type=int,
                   help="iteration to export (default: the tracker's latest)")
    g.add_argument("--tokenizer-model",
                   help="SentencePiece model of the run, exported as tokenizer.model + "
                        "tokenizer_config.json (default: the run's --tokenizer-model recorded "
                        "in the checkpoint, if any)")
    g.add_argument("--dtype", choices=["fp32", "bf16", "fp16"],
                   help="cast the weights (default: keep the checkpoint's dtype)")
    g.add_argument("--max-shard-size", default="5GB",
                   help="largest safetensors shard, e.g. 5GB or 500MB")
    g = parser.add_argument_group("hf-to-megatron")
    g.add_argument("--target-tensor-parallel-size", type=int, default=1,
                   help="tensor-parallel size of the checkpoint written")
    g.add_argument("--target-pipeline-parallel-size", type=int, default=1,
                   help="pipeline-parallel size of the checkpoint written")
    add_layer_split_flags(g)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _check_flags(args, parser: argparse.ArgumentParser):
    export_only = {"iteration": None, "tokenizer_model": None, "dtype": None,
                   "max_shard_size": "5GB"}
    import_only = {"target_tensor_parallel_size": 1, "target_pipeline_parallel_size": 1,
                   "target_num_layers_per_virtual_pipeline_stage": None,
                   "target_decoder_first_pipeline_num_layers": None,
                   "target_decoder_last_pipeline_num_layers": None}
    wrong = export_only if args.direction == "hf-to-megatron" else import_only
    for name, default in wrong.items():
        if getattr(args, name) != default:
            raise ConversionError(f"--{name.replace('_', '-')} does not apply to --direction "
                                  f"{args.direction}; drop it")
    check_positive(args, *import_only)


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def body():
        _check_flags(args, parser)
        if args.direction == "megatron-to-hf":
            from glm_megatron.convert.export import export_checkpoint
            export_checkpoint(args.load_dir, args.save_dir, hf_layout=args.hf_layout,
                              iteration=args.iteration, tokenizer_model=args.tokenizer_model,
                              dtype=args.dtype, max_shard_size=args.max_shard_size,
                              overwrite=args.overwrite, progress=not args.no_progress, log=log)
        else:
            from glm_megatron.convert.hf_import import import_checkpoint
            import_checkpoint(args.load_dir, args.save_dir,
                              tensor_parallel=args.target_tensor_parallel_size,
                              pipeline_parallel=args.target_pipeline_parallel_size,
                              **layer_split_kwargs(args), hf_layout=args.hf_layout,
                              overwrite=args.overwrite, progress=not args.no_progress, log=log)

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
