"""Scoring a whole split: forward passes through the run's forward-backward function, every
example's scores gathered on rank 0, the task's metrics and the predictions file.

Each DP rank scores its share of the split (padded to whole global batches); the last pipeline
stage's TP rank 0 holds the scores and sends them to rank 0, which orders the examples by their
index in the file. Metrics and the loss are computed there from all the scores at once, so they
do not depend on how the examples were batched.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from ..atomic_write import replaced_when_done
from ..data.sampler import build_data_loader
from ..parallel.context import ParallelContext
from .data import FinetuneData, padded_for_evaluation
from .heads import evaluation_loss
from .labels import MULTI_LABEL, REGRESSION
from .metrics import compute_metrics

SPLIT_NAMES = {"valid": "validation", "test": "test"}


@dataclass
class SplitScores:
    """Rank 0's view of a scored split, in file order."""
    index: np.ndarray  # [n]
    label: np.ndarray  # [n] ids / targets, or [n, K] multi-hot
    scores: np.ndarray  # [n, C] choices / logits, or [n] regression outputs
    choice_mask: Optional[np.ndarray]  # [n, C] cloze only


@dataclass
class Evaluation:
    loss: float  # NaN when no example is labelled
    metrics: dict  # empty when no example is labelled
    scores: SplitScores


def _labelled(problem_type: str, label: np.ndarray) -> np.ndarray:
    if problem_type == REGRESSION:
        return ~np.isnan(label)
    if problem_type == MULTI_LABEL:
        return (label >= 0).all(axis=1)
    return label >= 0


def predicted(problem_type: str, scores: np.ndarray) -> np.ndarray:
    if problem_type == REGRESSION:
        return scores
    if problem_type == MULTI_LABEL:
        return (scores > 0).astype(np.int64)
    return scores.argmax(axis=1)


class SplitEvaluator:
    """Scores one split with `forward_backward` (forward only); the collated micro-batches are
    made once and reused at every evaluation."""

    def __init__(self, data: FinetuneData, split: str, model, forward_backward,
                 ctx: ParallelContext, micro_batch_size: int, seed: int):
        self.data, self.split, self.model, self.ctx = data, split, model, ctx
        self.forward_backward = forward_backward
        per_iteration = micro_batch_size * ctx.dp_size * forward_backward.num_microbatches
        examples = padded_for_evaluation(data.splits[split], per_iteration)
        self.iterations = len(examples) // per_iteration
        loader = build_data_loader(examples, lambda items, _rng: data.collate(items), 0,
                                   micro_batch_size, ctx.dp_rank, ctx.dp_size, seed, split=1)
        count = self.iterations * forward_backward.num_microbatches
        self.batches = list(itertools.islice(loader, count))

    @property
    def num_examples(self) -> int:
        return len(self.data.splits[self.split].examples)

    @torch.no_grad()
    def _local_reports(self) -> list[dict]:
        self.model.eval()
        batches = iter(self.batches)
        reports = []
        for _ in range(self.iterations):
            output = self.forward_backward(batches, forward_only=True)
            reports += output.reports or []
        return reports

    def _gather(self, reports: list[dict]) -> Optional[SplitScores]:
        keys = ("index", "label", "scores", "choice_mask")
        holds_scores = self.ctx.is_last_stage and self.ctx.tp_rank == 0
        mine = {k: [r[k].cpu().numpy() for r in reports] for k in keys if reports and k in
                reports[0]} if holds_scores else {}
        # Every rank learns whether each example was scored once, so all stop together if not.
        count = torch.tensor([sum(int((a >= 0).sum()) for a in mine.get("index", []))],
                             device=self.ctx.device)
        dist.all_reduce(count)
        if count.item() != self.num_examples:
            raise RuntimeError(f"internal: {count.item()} scores for the {self.num_examples} "
                               f"examples of {self.split}")
        gathered = [None] * self.ctx.world_size if self.ctx.is_rank_zero else None
        dist.gather_object(mine, gathered, dst=0)
        if not self.ctx.is_rank_zero:
            return None
        parts = [g for g in gathered if g]
        joined = {k: np.concatenate([a for g in parts for a in g[k]]) for k in parts[0]}
        keep = joined["index"] >= 0  # padding copies out
        order = np.argsort(joined["index"][keep], kind="stable")
        joined = {k: v[keep][order] for k, v in joined.items()}
        if not np.array_equal(joined["index"], [e.index for e in
                                                self.data.splits[self.split].examples]):
            raise RuntimeError(f"internal: the scored examples of {self.split} are not each "
                               "of its examples once")
        return SplitScores(joined["index"], joined["label"], joined["scores"],
                           joined.get("choice_mask"))

    def run(self) -> Optional[Evaluation]:
        """The split's loss, metrics and scores on rank 0; None on the other ranks."""
        scores = self._gather(self._local_reports())
        if scores is None:
            return None
        problem_type = self.data.problem_type
        labelled = _labelled(problem_type, scores.label)
        if not labelled.any():
            return Evaluation(math.nan, {}, scores)
        loss = evaluation_loss(problem_type, torch.from_numpy(scores.scores[labelled]),
                               torch.from_numpy(scores.label[labelled]))
        metrics = compute_metrics(self.data.task.metric_names,
                                  predicted(problem_type, scores.scores[labelled]),
                                  scores.label[labelled])
        return Evaluation(loss, metrics, scores)


def _prediction(data: FinetuneData, scores: SplitScores, i: int) -> dict:
    """One predictions-file line: the example's index, the predicted label and its scores."""
    problem_type, label_set = data.problem_type, data.task.label_set
    row = scores.scores[i]
    if scores.choice_mask is not None:
        row = row[scores.choice_mask[i]]
    guess = predicted(problem_type, row[None])[0]
    if problem_type == REGRESSION:
        label = float(guess)
    elif problem_type == MULTI_LABEL:
        label = [name for name, hot in zip(label_set.names, guess) if hot]
    else:
        label = label_set.names[guess] if label_set is not None else int(guess)
    values = row.tolist() if row.ndim else [float(row)]
    return {"index": int(scores.index[i]), "label": label, "scores": values}


def write_predictions(path: str, data: FinetuneData, scores: SplitScores):
    """One JSON line per example, in file order; written whole and renamed into place."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with replaced_when_done(path) as (staging,), open(staging, "w") as f:
        for i in range(len(scores.index)):
            f.write(json.dumps(_prediction(data, scores, i)) + "\n")
