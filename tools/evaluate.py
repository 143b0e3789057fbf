#!/usr/bin/env python
"""Evaluate a trained GLM as a language model on text (one process, CPU or one GPU).

    python tools/evaluate.py --load runs/builtin/checkpoints --input wiki.txt \\
        --task perplexity --window 256 --stride 128
    python tools/evaluate.py --load runs/builtin/checkpoints --input lambada.jsonl \\
        --json-key text --task last-word --output results.json

The checkpoint may have been saved at any TP x PP x DP layout. Inputs: plain text (perplexity:
the whole file is one document; last-word: one example per non-empty line) or JSON lines
(`--json-key`; one document or example per record). Metrics are printed and, with --output,
written as JSON.
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
from glm_megatron.evaluation import MODES, evaluate_last_word, evaluate_perplexity  # noqa: E402
from glm_megatron.generation import load_model  # noqa: E402
from glm_megatron.parallel.context import resolve_device  # noqa: E402

TASKS = ("perplexity", "last-word")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/evaluate.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--load", required=True, help="checkpoint directory (a run's --save)")
    parser.add_argument("--iteration", type=int, help="default: the latest")
    parser.add_argument("--input", required=True, action="append",
                        help="text or JSON-lines file; repeat for several")
    parser.add_argument("--json-key", default="text", help="field of each JSON-lines record")
    parser.add_argument("--task", choices=TASKS, action="append",
                        help="what to measure; repeat for both (default: both)")
    parser.add_argument("--mode", choices=MODES,
                        help="causal: left to right; gmask: GLM's [gMASK] language modelling "
                             "(default: gmask for checkpoints pretrained with blank infilling "
                             "or prefix-LM, else causal)")
    parser.add_argument("--window", type=int, default=256, help="perplexity: tokens per window")
    parser.add_argument("--stride", type=int,
                        help="perplexity: tokens a window advances (default: half the window)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tokenizer-model", help="default: the one the run trained with")
    parser.add_argument("--output", help="write the metrics to this JSON file")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _default_mode(reader: CheckpointReader) -> str:
    data = reader.metadata.data
    return "gmask" if data and data.objective in ("blank-infilling", "prefix-lm") else "causal"


def read_texts(paths: list[str], json_key: str, one_per_line: bool) -> list[str]:
    texts = []
    for path in paths:
        if not os.path.isfile(path):
            raise ValueError(f"--input {path} does not exist")
        with open(path, encoding="utf-8") as f:
            if path.endswith((".jsonl", ".json")):
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        texts.append(json.loads(line)[json_key])
                    except (ValueError, KeyError, TypeError):
                        raise ValueError(f"--input {path} line {number}: not a JSON object with "
                                         f"a {json_key!r} field; set --json-key") from None
            elif one_per_line:
                texts += [line.rstrip("\n") for line in f if line.strip()]
            else:
                texts.append(f.read())
    if not texts:
        raise ValueError(f"--input {' '.join(paths)} holds no text")
    return texts


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    tasks = args.task or list(TASKS)
    try:
        reader = CheckpointReader(args.load, args.iteration, flag="--load")
        tokenizer = checkpoint_tokenizer(reader, args.tokenizer_model)
        mode = args.mode or _default_mode(reader)
        model = load_model(reader, resolve_device(args.device))
        results = {"checkpoint": os.path.abspath(args.load), "iteration": reader.iteration,
                   "mode": mode}
        progress = not args.no_progress
        if "perplexity" in tasks:
            results["perplexity"] = evaluate_perplexity(
                model, tokenizer, read_texts(args.input, args.json_key, False), mode,
                args.window, args.stride or max(1, args.window // 2), args.batch_size, progress)
        if "last-word" in tasks:
            results["last-word"] = evaluate_last_word(
                model, tokenizer, read_texts(args.input, args.json_key, True), mode,
                args.batch_size, progress)
    except (ConversionError, ValueError) as error:
        print(f"tools/evaluate.py: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(results, indent=2))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
