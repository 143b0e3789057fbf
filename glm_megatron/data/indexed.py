"""Write token documents as Megatron's indexed dataset (PREFIX.bin + PREFIX.idx).

The files come from megatron-core's own IndexedDatasetBuilder, so anything that reads Megatron
data (this package, Megatron-LM, NeMo) reads them. One entry per document: its tokens followed
by the end-of-document token, stored as uint16 when the vocabulary fits (as Megatron-LM's
preprocess_data.py does) and int32 otherwise.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy
from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

from ..atomic_write import replaced_when_done


@dataclass(frozen=True)
class IndexedDatasetStats:
    prefix: str
    documents: int
    tokens: int  # eod tokens included
    dtype: str


@contextlib.contextmanager
def indexed_dataset_builders(prefixes: Sequence[str],
                             dtype) -> Iterator[list[IndexedDatasetBuilder]]:
    """One builder per prefix, writing under temporary names. When the block ends without
    error every .bin and then every .idx is renamed into place, so a reader never finds an .idx
    whose .bin is unfinished; when it raises, nothing is left under any name."""
    paths = [p + ".bin" for p in prefixes] + [p + ".idx" for p in prefixes]
    with replaced_when_done(*paths) as temps:
        bins, indexes = temps[:len(prefixes)], temps[len(prefixes):]
        builders = []
        try:
            for path in bins:
                builders.append(IndexedDatasetBuilder(path, dtype=dtype))
            yield builders
        except BaseException:
            for builder in builders:
                try:
                    builder.data_file.close()
                except OSError:  # a full disk fails the flush of the last buffer again
                    pass
            raise
        for builder, index in zip(builders, indexes):
            builder.finalize(index)


def write_indexed_dataset(documents: Iterable[Sequence[int]], output_prefix: str,
                          vocab_size: int, eod: int) -> IndexedDatasetStats:
    """Write each non-empty token list plus `eod` as one document; returns what was written."""
    dtype = DType.optimal_dtype(vocab_size)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    num_documents = num_tokens = 0
    with indexed_dataset_builders([output_prefix], dtype) as (builder,):
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
    return IndexedDatasetStats(output_prefix, num_documents, num_tokens, dtype.__name__)
