#!/usr/bin/env python
"""Tokenize text into Megatron's indexed dataset (.bin/.idx), as Megatron-LM's
tools/preprocess_data.py does, for pretrain_glm.py --data-path.

    python tools/preprocess_data.py --input corpus.jsonl --json-keys text \\
        --tokenizer-model tokenizer.model --output-prefix data/corpus --workers 2
    # -> data/corpus_text_document.bin/.idx/.tokenizer.json; train with
    #    --data-path data/corpus_text_document

    python tools/preprocess_data.py --input books/ notes.txt --tokenizer-model tokenizer.model \\
        --output-prefix data/books --text-documents file --workers 2

Inputs: .jsonl/.json files (one JSON object per line), plain UTF-8 text files (one document per
blank-line-separated block, or per file with --text-documents file), and folders of them.
Every document gets the end-of-document token appended (--no-append-eod leaves it off). The
tokenizer is recorded beside each dataset (PREFIX_{KEY}_document.tokenizer.json: its path,
content hash, vocabulary size and special-token ids), so pretrain_glm.py --data-path takes it
without --tokenizer-model and refuses another one.
Documents that cannot be used (empty, not UTF-8, not JSON, no such key) are skipped and
reported, never fatal. Bad input prints one line naming the flag or file and the fix, exits with
status 2 and leaves no .bin/.idx behind; so does a run that fails or is stopped midway.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glm_megatron.data.inputs import TEXT_DOCUMENTS, InputError  # noqa: E402
from glm_megatron.data.preprocess import load_tokenizer, preprocess  # noqa: E402
from glm_megatron.data.tokenizer_record import (RECORD_SUFFIX, record_path,  # noqa: E402
                                                write_record)

PROG = "tools/preprocess_data.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = parser.add_argument_group("input")
    g.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="files or folders: *.jsonl/*.json are JSON lines, anything else UTF-8 "
                        "text; folders are read recursively in sorted order, hidden names "
                        "left out")
    g.add_argument("--json-keys", nargs="+", default=["text"], metavar="KEY",
                   help="JSON keys to tokenize, one output dataset each "
                        "(PREFIX_{KEY}_document); plain-text files are read under 'text'")
    g.add_argument("--text-documents", choices=TEXT_DOCUMENTS, default="blank-line",
                   help="what one document of a plain-text file is: a block of lines between "
                        "blank lines, or the whole file")
    g = parser.add_argument_group("tokenization")
    g.add_argument("--tokenizer-model", required=True, metavar="FILE",
                   help="SentencePiece .model (GLMTokenizer appends GLM's special tokens)")
    g.add_argument("--append-eod", action=argparse.BooleanOptionalAction, default=True,
                   help="end every document with the end-of-document token, as training "
                        "expects")
    g = parser.add_argument_group("output")
    g.add_argument("--output-prefix", required=True, metavar="PREFIX",
                   help="writes PREFIX_{KEY}_document.bin/.idx per --json-keys key, "
                        "replacing files of that name")
    g = parser.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1,
                   help="tokenizer processes; the output is the same for any number")
    g.add_argument("--chunk-size", type=int, default=64,
                   help="documents per task sent to a worker")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _stop(signum, frame):
    # Unwinds like Ctrl-C: the writer removes its temporary files on the way out.
    raise SystemExit(128 + signum)


def report(result, tokenizer_model: str) -> str:
    lines = []
    for out in result.outputs:
        lines.append(f"wrote {out.prefix}.bin/.idx: {out.documents:,} documents, "
                     f"{out.tokens:,} tokens ({out.dtype})")
    total = sum(result.skipped.values())
    if total:
        lines.append(f"skipped {total:,} of {result.records * len(result.outputs):,} documents:")
        for (key, reason), count in result.skipped.most_common():
            shown = result.examples[key, reason]
            more = ", ..." if count > len(shown) else ""
            lines.append(f"  {count:,} {reason} [{key}] ({', '.join(shown)}{more})")
    seconds = max(result.seconds, 1e-9)
    lines.append(f"{result.records:,} records in {result.seconds:.1f} s "
                 f"({result.records / seconds:,.0f} docs/s, {result.tokens / seconds:,.0f} "
                 "tokens/s)")
    if len(result.outputs) == 1:
        lines.append(f"train with: --data-path {result.outputs[0].prefix} (its tokenizer, "
                     f"{tokenizer_model}, is recorded in {record_path(result.outputs[0].prefix)})")
    return "\n".join(lines)


def _record_tokenizer(prefixes: list[str], tokenizer_model: str):
    """The tokenizer's record beside each dataset; a dataset whose record cannot be written
    is removed with it (data without its tokenizer's record would not train as written)."""
    tokenizer = load_tokenizer(tokenizer_model)
    try:
        for prefix in prefixes:
            write_record(prefix, tokenizer)
    except OSError:
        for path in (p + ext for p in prefixes for ext in (".bin", ".idx", RECORD_SUFFIX)):
            if os.path.exists(path):
                os.unlink(path)
        raise


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        result = preprocess(args.input, args.output_prefix, args.tokenizer_model,
                            json_keys=args.json_keys, workers=args.workers,
                            append_eod=args.append_eod, text_documents=args.text_documents,
                            chunk_size=args.chunk_size, progress=not args.quiet)
        _record_tokenizer([o.prefix for o in result.outputs], args.tokenizer_model)
    except InputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the disk filled up while writing
        where = error.filename or f"{args.output_prefix}_*_document.bin/.idx"
        print(f"{PROG}: error: cannot write {where}: "
              f"{(error.strerror or str(error)).lower()}; nothing written", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; nothing written", file=sys.stderr)
        return 130
    print(report(result, args.tokenizer_model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
