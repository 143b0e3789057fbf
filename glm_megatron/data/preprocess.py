"""Tokenize text files into Megatron's indexed dataset: the library side of
tools/preprocess_data.py.

    result = preprocess(["corpus.jsonl"], "data/corpus", "tokenizer.model", workers=2)
    # -> data/corpus_text_document.bin/.idx, as Megatron-LM's tools/preprocess_data.py names it

Per --json-keys key one dataset, PREFIX_{key}_document, written by megatron-core's own
IndexedDatasetBuilder exactly as Megatron-LM's tool writes it: one document per input document,
holding one sequence (its tokens, then the end-of-document token unless append_eod is off),
uint16 when the vocabulary fits, int32 otherwise. So datasets made here read in Megatron-LM and
theirs read here.

Flow: the main process reads raw documents in input order (glm_megatron.data.inputs) and feeds
them to a multiprocessing Pool (`imap`, ordered, in chunks); the workers decode and tokenize; the
main process appends each result to the builders, which stream to the .bin files. Results come
back in input order, so the files are the same byte for byte whatever the number of workers; with
one worker no pool is started and the same code runs in process. Memory stays bounded by the
read-ahead, never the corpus (the .idx's per-document lengths stay in memory until the end, as in
megatron-core's builder).

Documents that cannot be used are skipped and counted by reason: empty after tokenization, not
UTF-8, not JSON, missing the key, not a string. All outputs are written under temporary names
and renamed at the very end, so a run that fails or is killed leaves no .bin/.idx behind (a
SIGKILL may leave *.tmp-* files, never files under the real names).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import numpy

from .inputs import (InputError, Record, Skip, check_inputs, decode_record, iter_records,
                     list_input_files, total_bytes)
from .tokenizer import GLMTokenizer

EXAMPLES_PER_REASON = 3


@dataclass(frozen=True)
class OutputStats:
    key: str
    prefix: str  # PREFIX_{key}_document: what --data-path takes
    documents: int
    tokens: int  # end-of-document tokens included
    dtype: str


@dataclass
class PreprocessResult:
    outputs: list[OutputStats]
    records: int  # documents read, skipped ones included
    skipped: Counter = field(default_factory=Counter)  # (key, reason) -> documents
    examples: dict = field(default_factory=dict)  # (key, reason) -> ["file:line", ...]
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.outputs)


def dataset_prefix(prefix: str, key: str) -> str:
    """Megatron-LM's name for the dataset of one JSON key."""
    return f"{prefix}_{key}_document"


def load_tokenizer(model_path: str, flag: str = "--tokenizer-model") -> GLMTokenizer:
    """GLMTokenizer, or InputError naming the flag when the file cannot serve GLM."""
    if not os.path.isfile(model_path):
        raise InputError(f"{flag} {model_path}: no such file; give a SentencePiece .model "
                         "(tools/train_tokenizer.py makes one)")
    try:
        return GLMTokenizer(model_path)
    except ValueError as error:  # the model cannot serve GLM: the message says why and the fix
        raise InputError(f"{flag} {error}") from None
    except (RuntimeError, OSError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{flag} {model_path}: not a SentencePiece model ({detail}); give the "
                         ".model file that SentencePiece wrote (tools/train_tokenizer.py makes "
                         "one)") from None


# Workers ---------------------------------------------------------------------------------------
class _Encoder:
    """Turns a Record into, per key, the document's token array or a Skip."""

    def __init__(self, model_path: str, json_keys: Sequence[str], append_eod: bool, dtype: str):
        self.tokenizer = GLMTokenizer(model_path)
        self.json_keys = list(json_keys)
        self.eod = self.tokenizer.eod if append_eod else None
        self.dtype = numpy.dtype(dtype)

    def encode(self, record: Record) -> tuple[list[Union[numpy.ndarray, Skip]], Record]:
        outputs = []
        for pieces in decode_record(record, self.json_keys):
            if isinstance(pieces, Skip):
                outputs.append(pieces)
                continue
            ids = []
            for piece in pieces:
                ids += self.tokenizer.tokenize(piece)
            if not ids:
                outputs.append(Skip("empty"))
                continue
            if self.eod is not None:
                ids.append(self.eod)
            outputs.append(numpy.array(ids, dtype=self.dtype))
        # The record's bytes are not needed back: return only where it came from.
        return outputs, record._replace(data=b"")


_ENCODER: Optional[_Encoder] = None


def _init_worker(model_path: str, json_keys: Sequence[str], append_eod: bool, dtype: str,
                 in_pool: bool = True):
    global _ENCODER
    if in_pool:  # Ctrl-C reaches the whole process group: the main process handles it alone
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _ENCODER = _Encoder(model_path, json_keys, append_eod, dtype)


def _encode(record: Record):
    return _ENCODER.encode(record)


# Output ----------------------------------------------------------------------------------------
# Progress --------------------------------------------------------------------------------------
class _Progress:
    """A tqdm bar over input bytes (stderr) with documents/s and tokens/s beside it."""

    def __init__(self, total: Optional[int], enabled: bool):
        self.bar = None
        self.start = time.monotonic()
        self.documents = self.tokens = self._pending = 0
        self._next = self.start
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc="preprocess", file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5 if sys.stderr.isatty() else 30)

    def update(self, nbytes: int, documents: int, tokens: int):
        self.documents += documents
        self.tokens += tokens
        self._pending += nbytes
        if self.bar is None:
            return
        now = time.monotonic()
        if now >= self._next:
            self._flush(now)
            self._next = now + 0.25

    def _flush(self, now: float):
        elapsed = max(now - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.documents / elapsed:,.0f} docs/s, "
                                 f"{self.tokens / elapsed:,.0f} tokens/s", refresh=False)
        self.bar.update(self._pending)
        self._pending = 0

    def close(self, done: bool):
        if self.bar is not None:
            if done:
                if self.bar.total:
                    self._pending = self.bar.total - self.bar.n  # blank lines between documents
                self._flush(time.monotonic())
            else:
                self.bar.leave = False  # on a terminal, the error line alone stays
            self.bar.close()


# Driver ----------------------------------------------------------------------------------------
def _guarded(records: Iterator[Record], errors: list) -> Iterator[Record]:
    """The records, stopping at the first error and keeping it: the pool's feeder thread reads
    the input, and the error is raised in the main process after the results before it."""
    try:
        yield from records
    except Exception as error:  # noqa: BLE001 (re-raised by the main process)
        errors.append(error)


def _start_pool(workers: int, init_args: tuple):
    """None for one worker (the main process tokenizes); else a Pool of `workers` processes.
    spawn: workers import only this module and SentencePiece, never torch, and inherit none of
    the main process's threads; the start-up (~0.2 s) is paid once."""
    if workers == 1:
        _init_worker(*init_args, in_pool=False)
        return None
    return multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                     initargs=init_args)


def preprocess(inputs: Sequence[str], output_prefix: str, tokenizer_model: str,
               json_keys: Sequence[str] = ("text",), workers: int = 1, append_eod: bool = True,
               text_documents: str = "blank-line", chunk_size: int = 64,
               progress: bool = False) -> PreprocessResult:
    """Tokenize `inputs` (files or folders, see glm_megatron.data.inputs) into one indexed
    dataset per key, dataset_prefix(output_prefix, key); returns what was written and skipped.
    InputError (one line naming the flag) for unusable input; nothing is left behind on any
    error."""
    if workers < 1:
        raise InputError(f"--workers {workers}: give 1 or more worker processes")
    if chunk_size < 1:
        raise InputError(f"--chunk-size {chunk_size}: give 1 or more documents per task")
    if not json_keys or len(set(json_keys)) != len(json_keys):
        raise InputError(f"--json-keys {' '.join(json_keys)}: give one or more distinct keys")
    files = list_input_files(inputs)
    check_inputs(files, json_keys)
    tokenizer = load_tokenizer(tokenizer_model)
    prefixes = [dataset_prefix(output_prefix, k) for k in json_keys]
    try:
        os.makedirs(os.path.dirname(os.path.abspath(prefixes[0])), exist_ok=True)
    except OSError as error:
        raise InputError(f"--output-prefix {output_prefix}: cannot create its folder "
                         f"({error.strerror or error}); give a writable location") from None

    from megatron.core.datasets.indexed_dataset import DType

    from .indexed import indexed_dataset_builders

    dtype = DType.optimal_dtype(tokenizer.vocab_size)
    documents, tokens = [0] * len(json_keys), [0] * len(json_keys)
    result = PreprocessResult([], 0)
    errors: list = []
    records = _guarded(iter_records(files, json_keys, text_documents), errors)
    init_args = (tokenizer.model_path, list(json_keys), append_eod, numpy.dtype(dtype).name)
    bar = _Progress(total_bytes(files), progress)
    pool, done = None, False
    try:
        # Inside the try: a failure removes the partial output before the pool is stopped.
        with indexed_dataset_builders(prefixes, dtype) as builders:
            pool = _start_pool(workers, init_args)
            results = map(_encode, records) if pool is None else \
                pool.imap(_encode, records, chunk_size)
            for outputs, record in results:
                result.records += 1
                new_tokens = 0
                for i, output in enumerate(outputs):
                    if isinstance(output, Skip):
                        where = (json_keys[i], output.reason)
                        result.skipped[where] += 1
                        examples = result.examples.setdefault(where, [])
                        if len(examples) < EXAMPLES_PER_REASON:
                            examples.append(f"{files[record.file]}:{record.line}")
                        continue
                    # One sequence per document, as Megatron-LM's preprocess_data.py writes
                    # without --split-sentences.
                    builders[i].add_document(output, [output.size])
                    documents[i] += 1
                    tokens[i] += output.size
                    new_tokens += output.size
                bar.update(record.nbytes, 1, new_tokens)
            if errors:
                raise errors[0]
            for key, count in zip(json_keys, documents):
                if count == 0:
                    reasons = ", ".join(f"{n} {reason}" for (k, reason), n in
                                        result.skipped.most_common() if k == key)
                    raise InputError(f"--input: no document has text under the key {key!r} "
                                     f"({result.records} read; skipped: {reasons or 'none'}); "
                                     "check --input and --json-keys")
        done = True
    finally:
        if pool is not None:
            # Stops the workers at once; waits for the feeder thread's current read (which
            # blocks only on a pipe whose writer is still open).
            pool.terminate()
        bar.close(done)
    result.seconds = time.monotonic() - bar.start
    result.outputs = [OutputStats(k, p, d, t, numpy.dtype(dtype).name)
                      for k, p, d, t in zip(json_keys, prefixes, documents, tokens)]
    return result
