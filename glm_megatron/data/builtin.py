"""The built-in corpus, ready to train on: a SentencePiece tokenizer and an indexed dataset made
from Python's own documentation (builtin_corpus.py), built once and cached.

Cache: $GLM_MEGATRON_CACHE, else $XDG_CACHE_HOME/glm_megatron, else ~/.cache/glm_megatron; inside
it one folder per corpus version and Python version (the text comes from the installation):
    builtin-v2-py3.11.7/tokenizer.model
    builtin-v2-py3.11.7/corpus_text_document.{bin,idx,tokenizer.json}
Several processes may call ensure_builtin_data at once (torchrun): an exclusive lock on
builtin-*/.lock lets one build while the others wait, then all reuse the files. Every file is
written under a temporary name and renamed when complete, so a killed build leaves nothing that
looks finished.
"""

from __future__ import annotations

import fcntl
import os
import platform
import random
from typing import Optional

from .builtin_corpus import iter_builtin_documents
from .indexed import write_indexed_dataset
from .tokenizer import GLMTokenizer, train_sentencepiece
from .tokenizer_record import record_path, write_record

# ~1.7 MB of text: 8000 pieces keep the embedding small for the default CPU model while the
# corpus still gives ~430k tokens. Training takes a few seconds.
SENTENCEPIECE_VOCAB_SIZE = 8000
# The documents are shuffled once, with this seed, before the indexed dataset is written:
# megatron-core splits train/valid/test by contiguous document ranges, and in corpus order the
# validation split would be a handful of alphabetically last modules.
_SHUFFLE_SEED = 1234
# Raised whenever builtin_corpus.py changes the text, so that no cache of older text is reused.
CORPUS_VERSION = 2


def builtin_cache_dir() -> str:
    root = os.environ.get("GLM_MEGATRON_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "glm_megatron")
    return os.path.abspath(os.path.join(root, f"builtin-v{CORPUS_VERSION}-py{platform.python_version()}"))


def _paths(cache_dir: str) -> tuple[str, str]:
    return (os.path.join(cache_dir, "corpus_text_document"),
            os.path.join(cache_dir, "tokenizer.model"))


def _is_complete(cache_dir: str) -> bool:
    prefix, model = _paths(cache_dir)
    return all(os.path.isfile(p) for p in (model, prefix + ".bin", prefix + ".idx",
                                           record_path(prefix)))


def _build(cache_dir: str):
    prefix, model = _paths(cache_dir)
    print(f"glm_megatron: building the built-in corpus (Python {platform.python_version()}'s "
          f"documentation): a SentencePiece tokenizer ({SENTENCEPIECE_VOCAB_SIZE} pieces) and an "
          f"indexed dataset in {cache_dir}", flush=True)
    documents = list(iter_builtin_documents())
    # A tokenizer left by an interrupted build is reused: training is deterministic.
    if not os.path.isfile(model):
        train_sentencepiece(documents, SENTENCEPIECE_VOCAB_SIZE, model[:-len(".model")])
    random.Random(_SHUFFLE_SEED).shuffle(documents)
    tokenizer = GLMTokenizer(model)
    write_indexed_dataset((tokenizer.tokenize(d) for d in documents), prefix,
                          tokenizer.vocab_size, tokenizer.eod)
    write_record(prefix, tokenizer)  # last: its presence marks a complete build


def ensure_builtin_data(cache_dir: Optional[str] = None) -> tuple[str, str]:
    """(data prefix, tokenizer model path) of the built-in corpus, building it on first use."""
    cache_dir = os.path.abspath(cache_dir) if cache_dir else builtin_cache_dir()
    if not _is_complete(cache_dir):
        os.makedirs(cache_dir, exist_ok=True)
        with open(os.path.join(cache_dir, ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            if not _is_complete(cache_dir):
                _build(cache_dir)
    return _paths(cache_dir)
