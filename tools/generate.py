#!/usr/bin/env python
"""Fill the blanks of a text with a trained GLM (greedy, one process, CPU or one GPU).

    python tools/generate.py --load runs/builtin/checkpoints \\
        --text "Python is a [MASK] programming language."

The checkpoint may have been saved at any TP x PP x DP layout. Each blank ([MASK], [sMASK] or
[gMASK]) is filled in turn and printed; the tokenizer is the run's unless --tokenizer-model.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import glm_megatron  # noqa: E402,F401  (quiets megatron-core's import-time warnings)
from glm_megatron.convert.checkpoint import CheckpointReader  # noqa: E402
from glm_megatron.convert.errors import ConversionError  # noqa: E402
from glm_megatron.data.tokenizer import GLMTokenizer  # noqa: E402
from glm_megatron.generation import (check_prompt_fits, encode_blanks,  # noqa: E402
                                     fill_blanks, load_model)
from glm_megatron.parallel.context import resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/generate.py", description=__doc__.split("\n")[0])
    parser.add_argument("--load", required=True, help="checkpoint directory (a run's --save)")
    parser.add_argument("--iteration", type=int, help="default: the latest")
    parser.add_argument("--text", required=True, action="append",
                        help="text with blanks; repeat the flag for several texts")
    parser.add_argument("--tokenizer-model", help="default: the one the run trained with")
    parser.add_argument("--max-span-tokens", type=int, default=32)
    return parser


def _tokenizer(args, reader: CheckpointReader) -> GLMTokenizer:
    path = args.tokenizer_model or reader.tokenizer_path
    if not path or not os.path.isfile(path):
        raise ConversionError(f"--tokenizer-model: the run's tokenizer {path!r} is not there; "
                              "give the SentencePiece .model it trained with")
    try:
        return GLMTokenizer(path)
    except ValueError as error:
        raise ConversionError(f"--tokenizer-model {error}") from None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        reader = CheckpointReader(args.load, args.iteration, flag="--load")
        tokenizer = _tokenizer(args, reader)
        model = load_model(reader, resolve_device("auto"))
        for text in args.text:
            check_prompt_fits(reader.config, encode_blanks(tokenizer, text)[0],
                              args.max_span_tokens)
            spans = fill_blanks(model, tokenizer, text, args.max_span_tokens)
            print(text)
            for number, span in enumerate(spans, 1):
                print(f"  blank {number}: {span!r}")
    except (ConversionError, ValueError) as error:
        print(f"tools/generate.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
