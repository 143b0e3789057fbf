"""Write token documents as Megatron's indexed dataset (PREFIX.bin + PREFIX.idx).

The files come from megatron-core's own IndexedDatasetBuilder, so anything that reads Megatron
data (this package, Megatron-LM, NeMo) reads them. One entry per document: its tokens followed
by the end-of-document token, stored as uint16 when the vocabulary fits (as Megatron-LM's
preprocess_data.py does) and int32 otherwise.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder


@dataclass(frozen=True)
class IndexedDatasetStats:
    prefix: str
    documents: int
    tokens: int  # eod tokens included
    dtype: str


def write_indexed_dataset(documents: Iterable[Sequence[int]], output_prefix: str,
                          vocab_size: int, eod: int) -> IndexedDatasetStats:
    """Write each non-empty token list plus `eod` as one document; returns what was written.

    Both files are written under temporary names and renamed when complete, .bin before .idx, so
    a reader never finds an .idx whose .bin is unfinished and a killed write leaves nothing under
    the real names.
    """
    dtype = DType.optimal_dtype(vocab_size)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    suffix = f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp_bin, tmp_idx = f"{output_prefix}.bin{suffix}", f"{output_prefix}.idx{suffix}"
    num_documents = num_tokens = 0
    try:
        builder = IndexedDatasetBuilder(tmp_bin, dtype=dtype)
        for tokens in documents:
            if len(tokens) == 0:
                continue
            array = numpy.append(numpy.asarray(tokens, dtype=numpy.int64), eod)
            if array.min() < 0 or array.max() >= vocab_size:
                raise ValueError(f"document {num_documents} has a token id outside "
                                 f"0..{vocab_size - 1}")
            builder.add_document(array, [array.size])
            num_documents += 1
            num_tokens += array.size
        builder.finalize(tmp_idx)
        for tmp, final in ((tmp_bin, output_prefix + ".bin"), (tmp_idx, output_prefix + ".idx")):
            _fsync(tmp)
            os.replace(tmp, final)
    finally:
        for tmp in (tmp_bin, tmp_idx):
            if os.path.exists(tmp):
                os.unlink(tmp)
    return IndexedDatasetStats(output_prefix, num_documents, num_tokens, dtype.__name__)


def _fsync(path: str):
    with open(path, "rb") as f:
        os.fsync(f.fileno())
