"""Megatron's pretraining order: one global stream of samples, cut into micro-batches per rank.

Sample k of the run is dataset index k (mod the dataset's length; megatron-core's GPTDataset
already holds enough shuffled epochs for the whole run, so the wrap is only a safety net). The
stream is read in chunks of micro_batch_size x data-parallel size; DP rank r takes slice
[r*mbs, (r+1)*mbs) of every chunk. Starting at `consumed_samples` therefore resumes exactly
where an uninterrupted run would be, and the global batch of a step is the same for any DP size.
The order depends only on the dataset (i.e. the seed), never on the loader.

Each micro-batch is collated by the objective in the DataLoader worker that fetches it, with a
random generator keyed by the micro-batch's ordinal in the stream (its first sample // mbs):
the same samples get the same masks at any DP size, in any worker, and after a resume.

Ctrl-C is the training process's business: workers ignore it (it reaches the terminal's whole
process group) and are shut down by the loader, and the training process takes it between
batches, not while a worker hands it one (see `MicroBatchLoader`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import signal
from typing import Callable, Iterator, NamedTuple

import torch

from ..objectives.common import microbatch_rng


class MicroBatchRef(NamedTuple):
    ordinal: int        # position of its first sample in the stream // micro_batch_size
    indices: list[int]  # dataset indices of its samples


class PretrainingBatchSampler(torch.utils.data.Sampler):
    """Endless MicroBatchRefs: this rank's micro-batches, in training order."""

    def __init__(self, dataset_length: int, consumed_samples: int, micro_batch_size: int,
                 data_parallel_rank: int, data_parallel_size: int):
        if dataset_length < 1:
            raise ValueError("the dataset is empty")
        if micro_batch_size < 1 or not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"micro_batch_size {micro_batch_size} must be positive and "
                             f"data_parallel_rank {data_parallel_rank} in "
                             f"0..{data_parallel_size - 1}")
        if consumed_samples < 0 or consumed_samples % micro_batch_size:
            raise ValueError(f"consumed_samples {consumed_samples} must be a non-negative "
                             f"multiple of micro_batch_size {micro_batch_size}")
        self.dataset_length = dataset_length
        self.consumed_samples = consumed_samples
        self.micro_batch_size = micro_batch_size
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size

    def __iter__(self) -> Iterator[MicroBatchRef]:
        mbs = self.micro_batch_size
        chunk = mbs * self.data_parallel_size
        offset = self.data_parallel_rank * mbs
        for start in itertools.count(self.consumed_samples, chunk):
            first = start + offset
            yield MicroBatchRef(first // mbs,
                                [i % self.dataset_length for i in range(first, first + mbs)])


class CollatedMicroBatches(torch.utils.data.Dataset):
    """MicroBatchRef -> model batch: reads the samples and collates them (in the worker)."""

    def __init__(self, samples, collate: Callable, seed: int, split: int):
        self.samples, self.collate, self.seed, self.split = samples, collate, seed, split

    def __getitem__(self, ref: MicroBatchRef) -> dict:
        rng = microbatch_rng(self.seed, ref.ordinal, self.split)
        return self.collate([self.samples[i] for i in ref.indices], rng)


def _ignore(signals: tuple[int, ...], _worker_id: int):
    for number in signals:
        signal.signal(number, signal.SIG_IGN)


@contextlib.contextmanager
def _ctrl_c_after_the_block():
    """Holds a first Ctrl-C until the block ends (a second one interrupts at once)."""
    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):  # ignored (a background job) or default: nothing to hold
        yield
        return
    pressed = []

    def hold(number, frame):
        if pressed:
            previous(number, frame)
        pressed.append(number)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        previous(signal.SIGINT, None)


class MicroBatchLoader(torch.utils.data.DataLoader):
    """A DataLoader whose batches arrive whole. A worker hands over a batch's tensors through a
    handshake with the training process (file descriptors over a socket); a Ctrl-C in the
    middle of it left the worker's sharing thread printing a reset connection's traceback."""

    def __iter__(self):
        batches = super().__iter__()
        if self.num_workers == 0:
            yield from batches
            return
        while True:
            with _ctrl_c_after_the_block():
                batch = next(batches, None)
            if batch is None:
                return
            yield batch


def build_data_loader(samples, collate: Callable, consumed_samples: int, micro_batch_size: int,
                      data_parallel_rank: int, data_parallel_size: int, seed: int,
                      split: int = 0, num_workers: int = 0,
                      workers_ignore: tuple[int, ...] = ()) -> MicroBatchLoader:
    """An endless DataLoader of this rank's micro-batches (dicts of stacked tensors).
    `collate(samples, rng)` is the objective's collator; `split` (0 train, 1 valid, 2 test)
    keys its random streams apart. Workers ignore Ctrl-C and the signals `workers_ignore`."""
    sampler = PretrainingBatchSampler(len(samples), consumed_samples, micro_batch_size,
                                      data_parallel_rank, data_parallel_size)
    # A generator of its own: every iterator draws its workers' base seed from it, and drawing
    # from the global one would shift dropout after a resume (one iterator more or less).
    return MicroBatchLoader(
        CollatedMicroBatches(samples, collate, seed, split), sampler=sampler, batch_size=None,
        num_workers=num_workers, pin_memory=torch.cuda.is_available(),
        worker_init_fn=functools.partial(_ignore, (signal.SIGINT, *workers_ignore)),
        generator=torch.Generator().manual_seed(seed))
