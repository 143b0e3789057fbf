"""Which tokenizer made an indexed dataset: a record beside PREFIX.bin/.idx, PREFIX.tokenizer.json,
written by tools/preprocess_data.py (and the built-in corpus), so that data and tokenizer travel
together. It holds what checkpoints record about their tokenizer (checkpoint_format's
TokenizerRecord: the model's absolute path, SHA-256 of its content, vocabulary size,
special-token ids).

`dataset_tokenizer` decides which tokenizer a run over some datasets uses: the one given, which
must be the recorded one when there is a record, or else the recorded one. Datasets written
elsewhere (Megatron-LM's tool) have no record: the caller needs a tokenizer from somewhere else.
No torch here: pretrain_glm.py resolves its inputs before importing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Optional, Sequence

from ..atomic_write import write_atomically
from ..checkpoint_format import TokenizerRecord
from ..config import ConfigError

RECORD_SUFFIX = ".tokenizer.json"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_record(tokenizer) -> TokenizerRecord:
    """`tokenizer`: a GLMTokenizer."""
    special = {"eos": tokenizer.eod, "pad": tokenizer.pad, "mask": tokenizer.mask,
               "smask": tokenizer.smask, "gmask": tokenizer.gmask, "sop": tokenizer.sop,
               "eop": tokenizer.eop}
    return TokenizerRecord(path=os.path.abspath(tokenizer.model_path),
                           sha256=file_sha256(tokenizer.model_path),
                           vocab_size=tokenizer.vocab_size, special_tokens=special)


def record_path(prefix: str) -> str:
    return prefix + RECORD_SUFFIX


def write_record(prefix: str, tokenizer):
    record = dataclasses.asdict(tokenizer_record(tokenizer))
    write_atomically(record_path(prefix), (json.dumps(record, indent=2) + "\n").encode())


def read_record(prefix: str) -> Optional[TokenizerRecord]:
    """The dataset's record, None when it has none; ConfigError when it is unreadable."""
    path = record_path(prefix)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return TokenizerRecord(**json.load(f))
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"--data-path {prefix}: {path} cannot be read ({error}); delete it "
                          "and give --tokenizer-model, or preprocess the data again") from None


def dataset_tokenizer(prefixes: Sequence[str], tokenizer_model: Optional[str]) -> Optional[str]:
    """The tokenizer model for these datasets: `tokenizer_model` (--tokenizer-model) if given,
    refused when a dataset records another one; else the recorded one; None when neither says
    (datasets without a record and no flag). ConfigError, one line naming both, otherwise."""
    records = [(p, r) for p, r in ((p, read_record(p)) for p in prefixes) if r is not None]
    if len({r.sha256 for _, r in records}) > 1:
        (a, ra), (b, rb) = records[0], next((p, r) for p, r in records
                                            if r.sha256 != records[0][1].sha256)
        raise ConfigError(f"--data-path: {a} was preprocessed with {ra.path} but {b} with "
                          f"{rb.path}; a blend needs datasets of one tokenizer")
    if not records:
        return tokenizer_model
    prefix, record = records[0]
    if tokenizer_model is not None:
        if os.path.isfile(tokenizer_model) and file_sha256(tokenizer_model) != record.sha256:
            raise ConfigError(f"--tokenizer-model {tokenizer_model} is not the tokenizer "
                              f"--data-path {prefix} was preprocessed with ({record.path}, "
                              f"recorded in {record_path(prefix)}); pass that one, or leave "
                              "--tokenizer-model out to use it")
        return tokenizer_model
    if not os.path.isfile(record.path) or file_sha256(record.path) != record.sha256:
        state = "no longer exists" if not os.path.isfile(record.path) else "has changed since"
        raise ConfigError(f"--data-path {prefix} was preprocessed with {record.path}, which "
                          f"{state}; give --tokenizer-model with that tokenizer")
    return record.path
