#!/usr/bin/env python
"""Train a SentencePiece tokenizer for GLM and print its final vocabulary.

    python tools/train_tokenizer.py --input corpus.jsonl --vocab-size 32000 \\
        --model-prefix data/tokenizer             # -> data/tokenizer.model
    python tools/train_tokenizer.py --describe chatglm3/tokenizer.model \\
        --tensor-model-parallel-size 2            # check an existing model, no training

Inputs are read as tools/preprocess_data.py reads them: .jsonl/.json files (the text under
--json-keys), plain UTF-8 text files (documents split at blank lines), and folders of them.
The model keeps text exactly (identity normalisation, byte fallback) and has unk (id 0) and the
end-of-document piece </s> (id 1); training is deterministic for a given input and --seed.

--vocab-size counts SentencePiece pieces. GLMTokenizer appends GLM's special tokens after them
in a fixed order (ChatGLM3's first, so a ChatGLM3 tokenizer.model gives ChatGLM3's ids):
    [MASK] [gMASK] [sMASK] <sop> <eop> <|system|> <|user|> <|assistant|> <|observation|>
    [dBLOCK] [CLS] <pad>
and pretrain_glm.py pads the embedding to a multiple of --make-vocab-size-divisible-by x
--tensor-model-parallel-size, as Megatron-LM does. Both are printed at the end.

Bad input prints one line naming the flag or file and the fix and exits with status 2; the
model is written under a temporary name and renamed when complete, so a failed run leaves no
PREFIX.model behind.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import sentencepiece as spm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from glm_megatron.data.inputs import (TEXT_DOCUMENTS, InputError, Skip,  # noqa: E402
                                      check_inputs, decode_record, iter_records,
                                      list_input_files)
from glm_megatron.data.preprocess import load_tokenizer  # noqa: E402
from glm_megatron.data.tokenizer import (MAX_SENTENCE_BYTES, SentenceLengthError,  # noqa: E402
                                         padded_vocab_size, train_sentencepiece)

PROG = "tools/train_tokenizer.py"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = parser.add_argument_group("input")
    g.add_argument("--input", nargs="+", metavar="PATH",
                   help="files or folders, as for tools/preprocess_data.py")
    g.add_argument("--json-keys", nargs="+", default=["text"], metavar="KEY",
                   help="JSON keys whose text to train on")
    g.add_argument("--text-documents", choices=TEXT_DOCUMENTS, default="blank-line",
                   help="what one document of a plain-text file is")
    g = parser.add_argument_group("model")
    g.add_argument("--vocab-size", type=int, metavar="N",
                   help="SentencePiece pieces (GLM's special tokens come on top)")
    g.add_argument("--model-prefix", metavar="PREFIX", help="writes PREFIX.model")
    g.add_argument("--model-type", choices=("unigram", "bpe"), default="unigram")
    g.add_argument("--seed", type=int, default=1234)
    g.add_argument("--max-sentences", type=int, default=2_000_000,
                   help="paragraphs SentencePiece samples from the input (it holds them in "
                        "memory)")
    g.add_argument("--max-sentence-length", type=int, default=MAX_SENTENCE_BYTES, metavar="BYTES",
                   help="SentencePiece's limit on one text piece (a paragraph, or a line of a "
                        "longer one); longer pieces are left out of training")
    g.add_argument("--num-threads", type=int, default=os.cpu_count() or 1)
    g = parser.add_argument_group("vocabulary padding (printed, as pretrain_glm.py applies it)")
    g.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    g.add_argument("--tensor-model-parallel-size", type=int, default=1)
    parser.add_argument("--describe", metavar="MODEL",
                        help="print the GLM vocabulary of an existing SentencePiece model "
                             "instead of training one")
    return parser


def describe(model_path: str, divisible_by: int, tp: int, flag: str = "--describe") -> str:
    tokenizer = load_tokenizer(model_path, flag)
    sp = spm.SentencePieceProcessor(model_file=model_path)
    sp_size = sp.get_piece_size()
    lines = [f"{model_path}: {sp_size} SentencePiece pieces (ids 0..{sp_size - 1}); "
             f"unk {sp.unk_id()} {sp.id_to_piece(sp.unk_id())!r}, "
             f"eod {tokenizer.eod} {sp.id_to_piece(tokenizer.eod)!r}",
             "GLM special tokens, appended in this fixed order:"]
    lines += [f"  {i:>7}  {token}" for token, i in tokenizer.special_tokens.items()]
    padded = padded_vocab_size(tokenizer.vocab_size, divisible_by, tp)
    lines.append(f"vocabulary: {tokenizer.vocab_size} tokens; the model's embedding: {padded} "
                 f"rows (a multiple of --make-vocab-size-divisible-by {divisible_by} x "
                 f"--tensor-model-parallel-size {tp}, {padded // tp} per TP rank)")
    return "\n".join(lines)


def _documents(files, json_keys, text_documents, skipped: Counter, errors: list, read: list):
    """The text pieces to train on; skipped documents counted by reason. A read error is kept
    in `errors` and re-raised, so that SentencePiece stops (it reports errors of this iterator
    as its own)."""
    try:
        for record in iter_records(files, json_keys, text_documents):
            read[0] += 1
            for key, pieces in zip(json_keys, decode_record(record, json_keys)):
                if isinstance(pieces, Skip):
                    skipped[key, pieces.reason] += 1
                elif not any(pieces):
                    skipped[key, "empty"] += 1
                else:
                    yield from (p for p in pieces if p)
    except Exception as error:
        errors.append(error)
        raise


def _training_error(error: RuntimeError, vocab_size: int) -> InputError:
    message = str(error)
    if "Vocabulary size too high" in message:
        limit = message.rsplit("<=", 1)[-1].strip(" .")
        return InputError(f"--vocab-size {vocab_size}: SentencePiece can make at most {limit} "
                          "pieces from this input; lower --vocab-size or give more text")
    if "smaller than required_chars" in message:
        needed = message.split(" vs ", 1)[-1].split(".", 1)[0]
        return InputError(f"--vocab-size {vocab_size}: the input has {needed} distinct "
                          "characters and byte pieces that need a piece each; give at least "
                          f"{needed} plus room for words")
    detail = message.split("] ", 1)[-1].strip() or message.strip()
    return InputError(f"--input: SentencePiece training failed ({detail})")


def train(args) -> str:
    for flag, value in (("--vocab-size", args.vocab_size), ("--model-prefix", args.model_prefix)):
        if value is None:
            raise InputError(f"{flag} is required to train (or give --describe MODEL)")
    for flag, value in (("--vocab-size", args.vocab_size),
                        ("--max-sentence-length", args.max_sentence_length)):
        if value < 1:
            raise InputError(f"{flag} {value}: give a positive number")
    files = list_input_files(args.input or [])
    check_inputs(files, args.json_keys)
    skipped, errors, read, pieces = Counter(), [], [0], Counter()
    documents = _documents(files, args.json_keys, args.text_documents, skipped, errors, read)
    start = time.monotonic()
    try:
        path = train_sentencepiece(documents, args.vocab_size, args.model_prefix,
                                   model_type=args.model_type, seed=args.seed,
                                   num_threads=max(1, args.num_threads),
                                   max_sentences=args.max_sentences,
                                   max_sentence_length=args.max_sentence_length, counts=pieces)
    except SentenceLengthError as error:
        raise InputError(f"--input: {error}; raise --max-sentence-length (now "
                         f"{args.max_sentence_length}) or break the text into lines") from None
    except RuntimeError as error:
        if errors:
            raise errors[0] from None
        if read[0] == 0 or "sentences_.empty()" in str(error):
            raise InputError(f"--input: no document has text under {' '.join(args.json_keys)} "
                             f"({read[0]} read); check --input and --json-keys") from None
        raise _training_error(error, args.vocab_size) from None
    except OSError as error:
        raise InputError(f"--model-prefix {args.model_prefix}: cannot write the model "
                         f"({error.strerror or error}); give a writable location") from None
    print(f"trained {path} on {read[0]:,} documents in {time.monotonic() - start:.1f} s")
    for (key, reason), count in skipped.most_common():
        print(f"  skipped {count:,} {reason} [{key}]")
    if pieces["too long"]:
        print(f"  left out {pieces['too long']:,} text pieces longer than --max-sentence-length "
              f"{args.max_sentence_length}")
    return path


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for flag in ("--make-vocab-size-divisible-by", "--tensor-model-parallel-size"):
            if getattr(args, flag[2:].replace("-", "_")) < 1:
                raise InputError(f"{flag}: give a positive number")
        if args.describe:
            if args.input:
                raise InputError("--describe prints an existing model: leave out --input")
            path, flag = args.describe, "--describe"
        elif not args.input:
            raise InputError("--input: give the files or folders to train on "
                             "(or --describe MODEL)")
        else:
            path, flag = train(args), "--model-prefix"
        print(describe(path, args.make_vocab_size_divisible_by,
                       args.tensor_model_parallel_size, flag))
    except InputError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
