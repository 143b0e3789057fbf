"""Train/valid/test datasets of packed token samples, built by megatron-core.

`--data-path` is Megatron-LM's: one PREFIX, or a weighted blend W1 PREFIX1 W2 PREFIX2 ... of
indexed datasets (PREFIX.bin + PREFIX.idx). megatron-core's BlendedMegatronDatasetBuilder makes
GPTDatasets (and a BlendedDataset for a blend): documents are split train/valid/test by
contiguous ranges per `--split`, shuffled with the seed, joined with their end-of-document
tokens and cut into samples. With torch.distributed initialized, rank 0 builds the sample
indices first and the other ranks load them from the cache (a folder beside the first prefix).

Each sample is an int64 numpy array of seq_length + 1 tokens (the inputs and, one further, the
last causal label); the objective's collator (glm_megatron.objectives) turns micro-batches of
them into model batches. With a sentence-end table (GLM's objectives) a sample that starts
inside a sentence (the token before it, in its document, does not end one) drops that
fragment, as GLM's crops start at sentence starts: up to the first sentence end or
end-of-document within the first half of the sample, the sample shifted left and padded with
the pad id.

Input problems that megatron-core reports badly (asserts, or a split with no tokens, on which
GPTDataset loops forever) are checked first and raised as DataError naming the flag.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from collections import OrderedDict
from typing import Optional, Sequence

import numpy
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.indexed_dataset import DType

from ..atomic_write import write_atomically

SPLIT_NAMES = ("train", "valid", "test")
_IDX_MAGIC = b"MMIDIDX\x00\x00"
_IDX_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequences, documents
_PREFIX_HINT = ("give the prefix of a .bin/.idx pair without the extension, as written by "
                "glm_megatron.data.indexed.write_indexed_dataset or Megatron-LM's "
                "preprocess_data.py")


class DataError(ValueError):
    """The data flags (--data-path, --split) point at data that cannot be used."""


def parse_data_path(data_path: Sequence[str]) -> tuple[list[str], Optional[list[float]]]:
    """[PREFIX] -> ([PREFIX], None); [W1, P1, W2, P2, ...] -> ([P1, P2, ...], [W1, W2, ...])."""
    items = list(data_path)
    if len(items) == 1:
        return items, None
    if not items or len(items) % 2:
        raise DataError(f"--data-path {' '.join(items)}: give one PREFIX or weighted pairs "
                        "W1 PREFIX1 W2 PREFIX2 ...")
    weights = []
    for text in items[0::2]:
        try:
            weight = float(text)
        except ValueError:
            weight = math.nan
        if not (math.isfinite(weight) and weight > 0):
            raise DataError(f"--data-path: {text!r} is not a positive weight; a blend is "
                            "W1 PREFIX1 W2 PREFIX2 ... with numbers for W")
        weights.append(weight)
    return items[1::2], weights


def split_weights(split: str) -> list[float]:
    """--split as its train,valid,test weights (one to three); DataError when malformed."""
    parts = re.split(r"[,/]", split)
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 3 or not all(math.isfinite(v) and v >= 0 for v in values) or \
            sum(values) <= 0:
        raise DataError(f"--split {split!r}: give up to three non-negative train,valid,test "
                        "weights with a positive sum, e.g. 969,30,1")
    return values


def read_sequence_lengths(prefix: str) -> numpy.ndarray:
    """Tokens per document of an indexed dataset, after checking that its .idx is whole and
    agrees with its .bin; DataError otherwise."""
    return _read_index(prefix)[0]


def _read_index(prefix: str) -> tuple[numpy.ndarray, type]:
    """(tokens per document, token dtype) of a checked indexed dataset."""
    for ext in (".bin", ".idx"):
        if prefix.endswith(ext):
            raise DataError(f"--data-path {prefix}: drop the {ext} extension; {_PREFIX_HINT}")
        if not os.path.isfile(prefix + ext):
            raise DataError(f"--data-path {prefix}: {prefix}{ext} does not exist; {_PREFIX_HINT}")
    idx_path = prefix + ".idx"
    try:
        with open(idx_path, "rb") as f:
            header = f.read(_IDX_HEADER.size)
        idx_size, bin_size = os.path.getsize(idx_path), os.path.getsize(prefix + ".bin")
    except OSError as error:
        raise DataError(f"--data-path {prefix}: cannot read it ({error})") from error
    if len(header) < _IDX_HEADER.size or not header.startswith(_IDX_MAGIC):
        raise DataError(f"--data-path {prefix}: {idx_path} is not a Megatron index (truncated "
                        "or another format); write the dataset again")
    _, version, code, sequences, documents = _IDX_HEADER.unpack(header)
    if version != 1 or code not in {d.value for d in DType}:
        raise DataError(f"--data-path {prefix}: {idx_path} has an unknown version or dtype")
    if idx_size < _IDX_HEADER.size + 12 * sequences + 8 * documents:
        raise DataError(f"--data-path {prefix}: {idx_path} is truncated (a write was cut "
                        "short?); write the dataset again")
    if sequences == 0:
        raise DataError(f"--data-path {prefix}: the dataset holds no documents")
    lengths = numpy.fromfile(idx_path, dtype=numpy.int32, count=sequences,
                             offset=_IDX_HEADER.size)
    expected = int(lengths.sum(dtype=numpy.int64)) * DType.size(code)
    if bin_size != expected:
        raise DataError(f"--data-path {prefix}: {prefix}.bin has {bin_size} bytes but its .idx "
                        f"describes {expected}; the pair is truncated or from different writes, "
                        "write the dataset again")
    return lengths, DType.dtype_from_code(code)


def largest_token_id(prefix: str, dtype: type, cache_dir: str) -> int:
    """The largest token id in PREFIX.bin: one pass over the file the first time, then read
    from `cache_dir` (which is keyed by the data files' sizes and times)."""
    cache = os.path.join(cache_dir, f"{os.path.basename(prefix)}.largest_token_id")
    if os.path.isfile(cache):
        with open(cache) as f:
            return int(f.read())
    tokens = numpy.memmap(prefix + ".bin", dtype=dtype, mode="r")
    chunk = 1 << 26
    largest = max((int(tokens[i:i + chunk].max()) for i in range(0, len(tokens), chunk)),
                  default=-1)
    write_atomically(cache, str(largest).encode())
    return largest


def _check_token_ids(prefixes: list[str], dtypes: list[type], cache_dir: str, tokenizer):
    """Token ids the tokenizer does not have (data preprocessed with another tokenizer, a
    foreign .bin) would fail deep in the embedding: say so when the data is opened. Rank 0
    scans and caches first; the others then read the cache."""
    distributed = torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    if distributed and rank:
        torch.distributed.barrier()
    largest = [largest_token_id(p, d, cache_dir) for p, d in zip(prefixes, dtypes)]
    if distributed and not rank:
        torch.distributed.barrier()
    for prefix, top in zip(prefixes, largest):
        if top >= tokenizer.vocab_size:
            raise DataError(f"--data-path {prefix} holds token id {top}, but the tokenizer has "
                            f"{tokenizer.vocab_size} tokens: the data was preprocessed with "
                            "another tokenizer; give --tokenizer-model the one "
                            "tools/preprocess_data.py used")


def fingerprint(prefix: str) -> str:
    """Identifies an indexed dataset's content wherever it lies (a copied or moved dataset
    keeps it): the sizes of both files and a hash of the .idx's first and last MiB, which hold
    the document lengths. DataError for a missing or damaged dataset."""
    read_sequence_lengths(prefix)
    chunk = 1 << 20
    digest = hashlib.sha256()
    sizes = [os.path.getsize(prefix + ext) for ext in (".bin", ".idx")]
    with open(prefix + ".idx", "rb") as f:
        digest.update(f.read(chunk))
        if sizes[1] > 2 * chunk:
            f.seek(-chunk, os.SEEK_END)
        digest.update(f.read())
    return f"{sizes[0]}-{sizes[1]}-{digest.hexdigest()[:16]}"


def _active_splits(config: GPTDatasetConfig, prefixes: list[str], lengths: list[numpy.ndarray],
                   num_samples: Sequence[int], split: str) -> list:
    """The split matrix with the splits nobody draws from turned off; DataError for a split that
    samples are requested from but that holds no tokens (megatron-core would loop forever), or
    for a train split without a share."""
    matrix = []
    for i, (bounds, wanted) in enumerate(zip(config.split_matrix, num_samples)):
        name = SPLIT_NAMES[i]
        if not wanted or bounds is None:
            if wanted and name == "train":  # valid/test without a share: no evaluation
                raise DataError(f"--split {split} gives the train split no share but {wanted} "
                                "train samples are needed")
            matrix.append(None)
            continue
        for prefix, doc_lengths in zip(prefixes, lengths):
            n = len(doc_lengths)
            begin, end = (int(round(b * n)) for b in bounds)
            if doc_lengths[begin:end].sum() == 0:
                raise DataError(
                    f"--split {split} leaves the {name} split of --data-path {prefix} empty (it "
                    f"has {n} documents) but {wanted} {name} samples are needed; give {name} a "
                    "larger share, or 0 to turn it off, or use more data")
        matrix.append(bounds)
    return matrix


class _MegatronTokenizer:
    """What megatron-core's GPT dataset reads from a tokenizer; `unique_identifiers` enters the
    key of its cached indices."""

    def __init__(self, tokenizer):
        self.vocab_size, self.eod, self.pad = tokenizer.vocab_size, tokenizer.eod, tokenizer.pad
        self.unique_identifiers = OrderedDict(
            [("class", "GLMTokenizer"), ("vocab_size", self.vocab_size), ("eod", self.eod),
             ("pad", self.pad)])


def _default_cache_path(prefixes: list[str]) -> str:
    """Beside the first prefix, one folder per version of the data files: megatron-core keys
    its cached indices by path, not content, so a dataset rewritten in place must not find the
    old ones."""
    stats = [(os.path.abspath(p), os.stat(p + ext).st_size, os.stat(p + ext).st_mtime_ns)
             for p in prefixes for ext in (".bin", ".idx")]
    key = hashlib.md5(repr(stats).encode(), usedforsecurity=False).hexdigest()[:12]
    return os.path.join(os.path.dirname(os.path.abspath(prefixes[0])), "index-cache", key)


class TokenSamples(torch.utils.data.Dataset):
    """A megatron-core dataset as samples of seq_length + 1 token ids (see the module
    docstring); `sentence_end` (a boolean table over token ids) aligns them to sentences."""

    def __init__(self, dataset, eod: int, pad: int, sentence_end: Optional[numpy.ndarray] = None):
        self.dataset, self.eod, self.pad, self.sentence_end = dataset, eod, pad, sentence_end

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> numpy.ndarray:
        sample = self.dataset[index]
        tokens = numpy.concatenate([sample["tokens"].numpy(), sample["labels"][-1:].numpy()])
        if self.sentence_end is None:
            return tokens
        previous = self._previous_token(index)
        if previous is None or previous == self.eod or self.sentence_end[previous]:
            return tokens  # already at a sentence start
        return self._from_sentence_start(tokens)

    def _previous_token(self, index: int) -> Optional[int]:
        """The token before sample `index` in its document (None at a document start), from
        megatron-core's sample indices (loaded by the dataset's first __getitem__)."""
        dataset = self.dataset
        if isinstance(dataset, BlendedDataset):
            dataset, index = (dataset.datasets[dataset.dataset_index[index]],
                              dataset.dataset_sample_index[index])
        document, offset = dataset.sample_index[dataset.shuffle_index[index]]
        if offset == 0:
            return None
        return int(dataset.dataset.get(dataset.document_index[document], offset=int(offset) - 1,
                                       length=1)[0])

    def _from_sentence_start(self, tokens: numpy.ndarray) -> numpy.ndarray:
        head = tokens[:len(tokens) // 2]
        ends = numpy.flatnonzero(self.sentence_end[head] | (head == self.eod))
        if not len(ends):
            return tokens
        drop = int(ends[0]) + 1
        return numpy.concatenate([tokens[drop:], numpy.full(drop, self.pad, tokens.dtype)])


def build_datasets(data_path: Sequence[str], split: str, seq_length: int, seed: int,
                   num_samples: Sequence[int], tokenizer, cache_path: Optional[str] = None,
                   sentence_end: Optional[numpy.ndarray] = None,
                   ) -> tuple[Optional[TokenSamples], ...]:
    """(train, valid, test); a split is None when its share in `split` is 0 or no samples are
    requested from it. num_samples: samples needed per split (e.g. train_iters x global batch).
    Call on every rank: with torch.distributed initialized the ranks synchronise (rank 0 builds
    the indices first); a blend needs it initialized (a world of 1 is fine)."""
    prefixes, weights = parse_data_path(data_path)
    split_weights(split)
    if seq_length < 1 or len(num_samples) != 3 or min(num_samples) < 0:
        raise ValueError(f"seq_length {seq_length} must be positive and num_samples "
                         f"{tuple(num_samples)} three non-negative counts")
    if len(prefixes) > 1 and not torch.distributed.is_initialized():
        raise RuntimeError("a --data-path blend needs torch.distributed initialized "
                           "(megatron-core's BlendedDataset asks for the rank); a world of 1 "
                           "is fine")
    lengths, dtypes = zip(*(_read_index(p) for p in prefixes))
    cache_path = cache_path or _default_cache_path(prefixes)
    try:
        os.makedirs(cache_path, exist_ok=True)
    except OSError as error:
        raise DataError(f"--data-path {prefixes[0]}: cannot create the index cache {cache_path} "
                        f"({error}); make the data folder writable") from error
    _check_token_ids(prefixes, list(dtypes), cache_path, tokenizer)
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend=(prefixes, weights), split=split,
        path_to_cache=cache_path, tokenizer=_MegatronTokenizer(tokenizer),
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=False)
    config.split_matrix = _active_splits(config, prefixes, lengths, num_samples, split)
    built = BlendedMegatronDatasetBuilder(GPTDataset, [int(n) for n in num_samples],
                                          lambda: True, config).build()
    return tuple(TokenSamples(d, tokenizer.eod, tokenizer.pad, sentence_end)
                 if d is not None else None for d in built)
