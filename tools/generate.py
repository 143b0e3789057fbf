#!/usr/bin/env python
"""Fill the blanks of texts with a trained GLM (one process, CPU or one GPU).

    python tools/generate.py --load runs/builtin/checkpoints \\
        --text "Python is a [MASK] programming language, [sMASK]"
    python tools/generate.py --load runs/glm --input texts.txt --temperature 0.8 --top-p 0.9

The checkpoint may have been saved at any TP x PP x DP layout. Each blank ([MASK], [sMASK] or
[gMASK]) is filled in turn, greedily unless --temperature is given. --text prints each text and
its blanks; --input FILE reads one text per line and writes one JSON line per text to stdout:
{"text": ..., "blanks": [...]}. The tokenizer is the run's unless --tokenizer-model; models
pretrained with --prepend-cls get [CLS] before the text, as they were trained.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import glm_megatron  # noqa: E402,F401  (quiets megatron-core's import-time warnings)
from glm_megatron.convert.checkpoint import CheckpointReader  # noqa: E402
from glm_megatron.convert.cli import checkpoint_tokenizer  # noqa: E402
from glm_megatron.convert.errors import ConversionError  # noqa: E402
from glm_megatron.generation import Sampling, fill_blanks, load_model  # noqa: E402
from glm_megatron.parallel.context import resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/generate.py", description=__doc__.split("\n")[0])
    parser.add_argument("--load", required=True, help="checkpoint directory (a run's --save)")
    parser.add_argument("--iteration", type=int, help="default: the latest")
    texts = parser.add_mutually_exclusive_group(required=True)
    texts.add_argument("--text", action="append",
                       help="text with blanks; repeat the flag for several texts")
    texts.add_argument("--input", help="file with one text per line; JSON lines out")
    parser.add_argument("--tokenizer-model", help="default: the one the run trained with")
    parser.add_argument("--max-span-tokens", type=int, default=32,
                        help="longest fill of one blank")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="sample at this temperature (default 0: greedy)")
    parser.add_argument("--top-k", type=int, default=0,
                        help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=0.0,
                        help="sample among the most likely tokens whose probability reaches p "
                             "(0: all)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the sampling")
    parser.add_argument("--no-kv-cache", action="store_true",
                        help="recompute the whole row at every step instead of caching keys "
                             "and values (same output, slower)")
    return parser


def _texts(args) -> list[str]:
    if args.text is not None:
        return args.text
    if not os.path.isfile(args.input):
        raise ValueError(f"--input {args.input} does not exist; give a file with one text per "
                         "line")
    with open(args.input, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise ValueError(f"--input {args.input} holds no text")
    return texts


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # Everything that can be wrong with the input is checked before any output.
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        if args.max_span_tokens < 1:
            raise ValueError(f"--max-span-tokens {args.max_span_tokens} must be at least 1")
        texts = _texts(args)
    except ValueError as error:
        print(f"tools/generate.py: error: {error}", file=sys.stderr)
        return 2
    try:
        reader = CheckpointReader(args.load, args.iteration, flag="--load")
        tokenizer = checkpoint_tokenizer(reader, args.tokenizer_model)
        prepend_cls = reader.prepends_cls
        model = load_model(reader, resolve_device("auto"))
        results = []
        for number, text in enumerate(texts, 1):
            try:
                results.append(fill_blanks(model, tokenizer, text, args.max_span_tokens,
                                           sampling, prepend_cls, not args.no_kv_cache))
            except ValueError as error:
                where = f"--input line {number}" if args.input else f"--text {number}"
                raise ValueError(f"{where}: {error}") from None
        for text, spans in zip(texts, results):
            if args.input:
                print(json.dumps({"text": text, "blanks": spans}, ensure_ascii=False))
                continue
            print(text)
            for number, span in enumerate(spans, 1):
                print(f"  blank {number}: {span!r}")
    except (ConversionError, ValueError) as error:
        print(f"tools/generate.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
