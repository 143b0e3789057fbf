"""What a pretraining run records in its checkpoints beside the weights (the typed records of
glm_megatron/checkpoint_format.py), filled from the flags and the resolved inputs. This is the
one place that knows which flag fills which field (the tokenizer's record comes from
data/tokenizer_record.py, which datasets share)."""

from __future__ import annotations

import argparse

from ..checkpoint_format import DataRecord, DataSource, ScheduleRecord
from ..data.datasets import fingerprint, parse_data_path


def data_record(args: argparse.Namespace, data_path: list[str]) -> DataRecord:
    """`data_path`: --data-path, or the built-in corpus' prefix."""
    prefixes, weights = parse_data_path(data_path)
    sources = tuple(DataSource(prefix, weight, fingerprint(prefix))
                    for prefix, weight in zip(prefixes, weights or [None] * len(prefixes)))
    return DataRecord(sources=sources, split=args.split, seq_length=args.seq_length,
                      seed=args.seed, objective=args.objective,
                      global_batch_size=args.global_batch_size,
                      micro_batch_size=args.micro_batch_size, prepend_cls=args.prepend_cls)


def schedule_record(args: argparse.Namespace) -> ScheduleRecord:
    return ScheduleRecord(train_iters=args.train_iters, lr=args.lr, min_lr=args.min_lr,
                          lr_decay_style=args.lr_decay_style, lr_decay_iters=args.lr_decay_iters,
                          lr_warmup_iters=args.lr_warmup_iters,
                          lr_wsd_decay_iters=args.lr_wsd_decay_iters,
                          lr_wsd_decay_style=args.lr_wsd_decay_style,
                          weight_decay=args.weight_decay)


def precision(args: argparse.Namespace) -> str:
    return "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
