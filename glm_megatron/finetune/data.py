"""A finetuning run's data: the task's files read and encoded once for the chosen head, the
model batches made from them, and the order the run reads them in.

Cloze scoring picks its layout here: single-token (the candidates' logits at the `<sop>` row)
when every answer of every split is one token and `--multi-token` is not given, else one row per
(example, choice). Either way the model scores only the target positions (`target_positions`,
`target_ids`), so no logits of other positions are computed.

Training order: epoch e is a permutation of the training examples drawn from (seed, e), cut to
whole global batches (the rest of an epoch is left out, as Megatron-LM's finetuning drops the
last batch); the run is the epochs one after another, read by pretraining's sampler, so a
global batch holds the same examples at every DP size and a resumed run continues exactly.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from .collate import (MultiTokenClozeCollator, SequenceClassificationCollator,
                      SingleTokenClozeCollator)
from .encoding import ClozeEncoder, EncodedSplit, SequenceEncoder
from .labels import SINGLE_LABEL, LabelSet
from .tasks import build_task, check_head, max_num_choices

SINGLE_TOKEN, MULTI_TOKEN, RIGHTMOST_TOKEN = "single-token", "multi-token", "rightmost-token"


@dataclass
class FinetuneData:
    task: object  # LabelTask | ChoiceTask
    head: str
    scoring: str
    splits: dict  # split name -> EncodedSplit, for the files given
    collate: Callable[[list], dict]  # encoded examples -> model batch
    rows_per_example: int  # model rows of one example: its choices for multi-token cloze

    @property
    def problem_type(self) -> str:
        """What the loss and metrics treat the scores as (cloze: one label among choices)."""
        if self.head == "cloze" or self.task.label_set is None:
            return SINGLE_LABEL
        return self.task.label_set.problem_type


def single_token_targets(batch: dict) -> dict:
    """Score each candidate token at the example's `<sop>` row."""
    rows, choices = batch["choice_token_ids"].shape
    batch["target_positions"] = batch["answer_position"][:, None].expand(rows, choices).clone()
    batch["target_ids"] = batch["choice_token_ids"]
    return batch


def multi_token_targets(batch: dict, num_targets: int) -> dict:
    """Only the `num_targets` Part B positions of each row (the longest answer + `<eop>`):
    targets, and their loss mask, are gathered there from the row's labels."""
    offsets = torch.arange(num_targets)
    positions = (batch["sep"][:, None] + offsets).clamp(max=batch["tokens"].shape[1] - 1)
    rows = torch.arange(len(positions))[:, None]
    in_answer = offsets[None] < batch["loss_mask"].sum(dim=1, keepdim=True)
    batch["target_positions"] = positions
    batch["target_ids"] = batch.pop("labels")[rows, positions]
    batch["loss_mask"] = batch["loss_mask"][rows, positions] * in_answer
    return batch


def _single_token(splits: dict) -> bool:
    return all(len(answer) == 1 for split in splits.values() for example in split.examples
               for answer in example.answers)


def _encode_cloze(task, files: dict, tokenizer, args, prepend_cls: bool) -> tuple[dict, bool]:
    """Each split's examples for cloze scoring and whether they are single-token."""
    examples = {split: task.cloze_examples(path, split) for split, path in files.items()}

    def encode(single_token: bool, seq_length: int) -> dict:
        encoder = ClozeEncoder(tokenizer, seq_length, prepend_cls=prepend_cls,
                               truncate=args.truncate, single_token=single_token)
        return {split: encoder.encode(items, files[split]) for split, items in examples.items()}

    single = args.multi_token is False  # asked for: a multi-token answer is an error
    if args.multi_token is None:  # the answers' tokens decide, whatever the rows' lengths
        single = _single_token(encode(False, sys.maxsize))
    return encode(single, args.seq_length), single


def prepare_data(args, head: str, tokenizer, prepend_cls: bool,
                 label_set: Optional[LabelSet] = None) -> FinetuneData:
    """Read, check and encode --train-data, --valid-data and --test-data for `head`;
    `label_set` (from a checkpoint) keeps the label ids of an earlier run."""
    task = build_task(args.task, train_data=args.train_data, label_set=label_set,
                      pattern_id=args.pattern_id, pattern=args.pattern,
                      verbalizers=args.verbalizer or (), problem_type=args.problem_type)
    check_head(task, head)
    files = {split: path for split, path in (("train", args.train_data),
                                              ("valid", args.valid_data),
                                              ("test", args.test_data)) if path}
    if head == "seq-cls":
        encoder = SequenceEncoder(tokenizer, args.seq_length, prepend_cls=prepend_cls,
                                  truncate=args.truncate)
        splits = {split: encoder.encode(task.sequence_examples(path, split), path)
                  for split, path in files.items()}
        labels = task.label_set
        return FinetuneData(task, head, RIGHTMOST_TOKEN, splits,
                            SequenceClassificationCollator(args.seq_length, labels.problem_type,
                                                           labels.num_labels, tokenizer), 1)
    splits, single = _encode_cloze(task, files, tokenizer, args, prepend_cls)
    num_choices = max_num_choices(*(split.examples for split in splits.values()))
    if single:
        collator = SingleTokenClozeCollator(args.seq_length, num_choices, tokenizer)
        return FinetuneData(task, head, SINGLE_TOKEN, splits,
                            lambda examples: single_token_targets(collator(examples)), 1)
    collator = MultiTokenClozeCollator(args.seq_length, num_choices, tokenizer)
    num_targets = 1 + max(len(answer) for split in splits.values()
                          for example in split.examples for answer in example.answers)
    return FinetuneData(task, head, MULTI_TOKEN, splits,
                        lambda examples: multi_token_targets(collator(examples), num_targets),
                        num_choices)


class EpochStream:
    """The training examples of the whole run, in reading order (see the module doc)."""

    def __init__(self, examples: list, epochs: int, global_batch_size: int, seed: int):
        self.examples, self.epochs, self.seed = examples, epochs, seed
        self.per_epoch = len(examples) // global_batch_size * global_batch_size
        self._epoch, self._order = -1, None

    def __len__(self) -> int:
        return self.epochs * self.per_epoch

    def __getitem__(self, k: int):
        epoch, offset = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            self._epoch, self._order = epoch, rng.permutation(len(self.examples))
        return self.examples[self._order[offset]]


def padded_for_evaluation(split: EncodedSplit, global_batch_size: int) -> list:
    """The split's examples, padded to whole global batches with copies marked index -1 (left
    out of metrics and predictions), so every rank runs the same number of micro-batches."""
    examples = list(split.examples)
    missing = -len(examples) % global_batch_size
    return examples + [dataclasses.replace(examples[i % len(examples)], index=-1)
                       for i in range(missing)]
