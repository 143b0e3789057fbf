"""Evaluation metrics, pure numpy.

- accuracy: fraction of exact predictions (class ids or choice indices);
- macro-f1: the mean F1 over the classes present in the labels or the predictions
  (scikit-learn's f1_score(average="macro")); for CB and text-classification with more than
  two labels;
- mse and pearson for regression (pearson is NaN when either side is constant);
- exact-match (every label of an example right) and micro-f1 over all (example, label) pairs
  for multi-label classification, from 0/1 matrices [n, num_labels].

`task_metric_names` lists a task's metrics, the one to pick the best checkpoint by first;
`compute_metrics(names, predictions, labels)` evaluates them. Unlabeled examples (label -1)
must be left out by the caller.
"""

from __future__ import annotations

import numpy as np

from .labels import MULTI_LABEL, REGRESSION


def accuracy(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float(np.mean(predictions == labels))


def _f1(true_positives, false_positives, false_negatives):
    """F1 = 2TP / (2TP + FP + FN), 0 where the denominator is 0."""
    denominator = 2 * true_positives + false_positives + false_negatives
    return np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)


def macro_f1(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes = np.union1d(predictions, labels)
    predicted = predictions[:, None] == classes[None]
    actual = labels[:, None] == classes[None]
    scores = _f1((predicted & actual).sum(0), (predicted & ~actual).sum(0),
                 (~predicted & actual).sum(0))
    return float(scores.mean())


def mean_squared_error(predictions, targets) -> float:
    diff = np.asarray(predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return float(np.mean(diff ** 2))


def pearson(predictions, targets) -> float:
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x ** 2).sum() * (y ** 2).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def exact_match(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions, bool), np.asarray(labels, bool)
    return float(np.mean((predictions == labels).all(axis=1)))


def micro_f1(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions, bool), np.asarray(labels, bool)
    return float(_f1((predictions & labels).sum(), (predictions & ~labels).sum(),
                     (~predictions & labels).sum()))


METRICS = {"accuracy": accuracy, "macro-f1": macro_f1, "mse": mean_squared_error,
           "pearson": pearson, "exact-match": exact_match, "micro-f1": micro_f1}
LOWER_IS_BETTER = frozenset({"mse"})


def task_metric_names(task: str, label_set) -> tuple:
    """The metrics of `--task` (label_set None for multiple-choice tasks)."""
    if label_set is not None and label_set.problem_type == REGRESSION:
        return ("mse", "pearson")
    if label_set is not None and label_set.problem_type == MULTI_LABEL:
        return ("exact-match", "micro-f1")
    if task == "cb" or task == "text-classification" and label_set.num_labels > 2:
        return ("accuracy", "macro-f1")
    return ("accuracy",)


def compute_metrics(names, predictions, labels) -> dict:
    return {name: METRICS[name](predictions, labels) for name in names}
