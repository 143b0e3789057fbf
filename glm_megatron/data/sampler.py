"""Megatron's pretraining order: one global stream of samples, cut into micro-batches per rank.

Sample k of the run is dataset index k (mod the dataset's length; megatron-core's GPTDataset
already holds enough shuffled epochs for the whole run, so the wrap is only a safety net). The
stream is read in chunks of micro_batch_size x data-parallel size; DP rank r takes slice
[r*mbs, (r+1)*mbs) of every chunk. Starting at `consumed_samples` therefore resumes exactly
where an uninterrupted run would be, and the global batch of a step is the same for any DP size.
The order depends only on the dataset (i.e. the seed), never on the loader.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import torch


class PretrainingBatchSampler(torch.utils.data.Sampler):
    """Endless lists of dataset indices: this rank's micro-batches, in training order."""

    def __init__(self, dataset_length: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int, data_parallel_size: int):
        if dataset_length < 1:
            raise ValueError("the dataset is empty")
        if micro_batch_size < 1 or not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"micro_batch_size {micro_batch_size} must be positive and "
                             f"data_parallel_rank {data_parallel_rank} in "
                             f"0..{data_parallel_size - 1}")
        if consumed_samples < 0:
            raise ValueError(f"consumed_samples {consumed_samples} must be non-negative")
        self.dataset_length = dataset_length
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    def __iter__(self) -> Iterator[list[int]]:
        chunk = self.micro_batch_size * self.data_parallel_size
        offset = self.data_parallel_rank * self.micro_batch_size
        for start in itertools.count(self.consumed_samples, chunk):
            first = start + offset
            yield [i % self.dataset_length for i in range(first, first + self.micro_batch_size)]


def build_data_loader(dataset, consumed_samples: int, micro_batch_size: int,
                      data_parallel_rank: int, data_parallel_size: int,
                      num_workers: int = 0) -> torch.utils.data.DataLoader:
    """An endless DataLoader of this rank's micro-batches (dicts of stacked tensors)."""
    sampler = PretrainingBatchSampler(len(dataset), consumed_samples, micro_batch_size,
                                      data_parallel_rank, data_parallel_size)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                                       pin_memory=torch.cuda.is_available())
