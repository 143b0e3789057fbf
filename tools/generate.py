#!/usr/bin/env python
"""Fill the blanks of texts, or continue prompts, with a trained GLM (one process, CPU or one
GPU).

    python tools/generate.py --load runs/glm --text "Python is a [MASK] language, [sMASK]"
    python tools/generate.py --load runs/builtin/checkpoints --prompt "The Python tutorial"
    python tools/generate.py --load runs/glm --input texts.txt --temperature 0.8 --top-p 0.9

What a checkpoint can do follows its pretraining objective: `--objective causal` (the built-in
run, ChatGLM2/3, GLM-4) continues prompts left to right (--prompt); blank infilling and
prefix-LM (GLM, ChatGLM-6B) fill blanks ([MASK], [sMASK] or [gMASK]; a continuation is a
trailing [gMASK]). Asking a checkpoint for what it was not trained to do is a one-line error.
Imported checkpoints without a recorded objective count as causal unless their architecture has
block positions. The checkpoint may have been saved at any TP x PP x DP layout. Greedy unless
--temperature is given. --text/--prompt print readable lines; --input FILE reads one text (or
prompt, for causal checkpoints) per line and writes one JSON line per text: {"text": ...,
"blanks": [...]} or {"prompt": ..., "continuation": ...}. The tokenizer is the run's unless
--tokenizer-model; models pretrained with --prepend-cls get [CLS] before the text, as they
were trained.
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
from glm_megatron.generation import (Sampling, fill_blanks, generate_causal,  # noqa: E402
                                     load_model)
from glm_megatron.parallel.context import resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/generate.py", description=__doc__.split("\n")[0])
    parser.add_argument("--load", required=True, help="checkpoint directory (a run's --save)")
    parser.add_argument("--iteration", type=int, help="default: the latest")
    texts = parser.add_mutually_exclusive_group(required=True)
    texts.add_argument("--text", action="append",
                       help="text with blanks; repeat the flag for several texts")
    texts.add_argument("--prompt", action="append",
                       help="text to continue (causal checkpoints); repeat for several")
    texts.add_argument("--input", help="file with one text (or prompt, for causal checkpoints) "
                                       "per line; JSON lines out")
    parser.add_argument("--tokenizer-model", help="default: the one the run trained with")
    parser.add_argument("--max-span-tokens", type=int, default=32,
                        help="longest fill of one blank")
    parser.add_argument("--max-new-tokens", type=int, default=32,
                        help="longest continuation of a prompt")
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


def pretraining_objective(reader: CheckpointReader) -> str:
    """The objective the checkpoint was pretrained with, as its run recorded; for imports,
    blank infilling when the architecture has block positions, else causal."""
    data = reader.metadata.data
    if data is not None and data.objective:
        return data.objective
    return "blank-infilling" if reader.config.block_position_encoding else "causal"


def _check_use(args, objective: str):
    """Prompts for causal checkpoints, blanks for the others: one line otherwise."""
    if objective == "causal" and args.text is not None:
        raise ValueError(f"--text: --load {args.load} was pretrained with --objective causal "
                         "(left to right) and never saw blanks; continue a prompt with --prompt")
    if objective != "causal" and args.prompt is not None:
        raise ValueError(f"--prompt: --load {args.load} was pretrained with --objective "
                         f"{objective}, which generates only into blanks; write the "
                         "continuation as a trailing blank: --text 'PROMPT [gMASK]'")


def _continue(model, tokenizer, prompts: list[str], args, sampling) -> list[str]:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens {args.max_new_tokens} must be at least 1")
    return [tokenizer.detokenize(generate_causal(
        model, tokenizer.tokenize(prompt), args.max_new_tokens, sampling, not args.no_kv_cache,
        end_tokens=(tokenizer.eod,))) for prompt in prompts]


def _texts(args) -> list[str]:
    if args.text is not None or args.prompt is not None:
        return args.text or args.prompt
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
        objective = pretraining_objective(reader)
        _check_use(args, objective)
        tokenizer = checkpoint_tokenizer(reader, args.tokenizer_model)
        model = load_model(reader, resolve_device("auto"))
        if objective == "causal":
            continuations = _continue(model, tokenizer, texts, args, sampling)
            for prompt, continuation in zip(texts, continuations):
                print(json.dumps({"prompt": prompt, "continuation": continuation},
                                 ensure_ascii=False) if args.input else
                      f"{prompt}\n  continuation: {continuation!r}")
            return 0
        results = []
        for number, text in enumerate(texts, 1):
            try:
                results.append(fill_blanks(model, tokenizer, text, args.max_span_tokens,
                                           sampling, reader.prepends_cls,
                                           not args.no_kv_cache))
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
