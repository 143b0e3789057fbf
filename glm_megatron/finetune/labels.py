"""The label set of a classification task, read from its training data.

Label values in the JSON lines decide the problem type (transformers' `problem_type` names):
- a string (or true/false, read as "true"/"false"): single_label_classification;
- a number: regression (one float target);
- a list of strings: multi_label_classification (a multi-hot target).
An explicit problem type may also read integer labels as class names ("0", "1", ...).

The names are sorted (integer-like names by value), so the label ids do not depend on the order
of the training file. `LabelSet.to_dict()` / `from_dict()` store it in a checkpoint;
`id2label` / `label2id` are transformers' config fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .errors import FinetuneDataError
from .jsonl import Record

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)

# One example's encoded label: a class id, a regression target or a multi-hot row.
EncodedLabel = Union[int, float, tuple]


def _label_name(value) -> Optional[str]:
    """A class label's name, or None when the value cannot name a class."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return None


def _sort_key(name: str):
    try:
        return (0, int(name), name)
    except ValueError:
        return (1, 0, name)


def infer_problem_type(value, record: Record) -> str:
    if isinstance(value, (str, bool)):
        return SINGLE_LABEL
    if isinstance(value, (int, float)):
        return REGRESSION
    if isinstance(value, list):
        return MULTI_LABEL
    raise FinetuneDataError(f"{record.where}: label {value!r} is neither a string (a class), a "
                            "number (regression) nor a list of strings (multi-label)")


@dataclass(frozen=True)
class LabelSet:
    problem_type: str
    names: tuple = ()  # empty for regression

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem type {self.problem_type!r}: choose one of "
                             f"{', '.join(PROBLEM_TYPES)}")
        object.__setattr__(self, "names", tuple(self.names))

    @property
    def num_labels(self) -> int:
        """The classifier's output size: 1 for regression."""
        return 1 if self.problem_type == REGRESSION else len(self.names)

    @property
    def id2label(self) -> dict:
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict:
        return {name: i for i, name in enumerate(self.names)}

    def to_dict(self) -> dict:
        return {"problem_type": self.problem_type, "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSet":
        return cls(data["problem_type"], tuple(data["names"]))

    def _class_id(self, value, record: Record) -> int:
        name = _label_name(value)
        if name not in self.label2id:
            known = ", ".join(map(repr, self.names))
            raise FinetuneDataError(f"{record.where}: label {value!r} is not one of the "
                                    f"training data's labels ({known}); fix the label or add "
                                    "examples of it to the training data")
        return self.label2id[name]

    def encode(self, value, record: Record) -> EncodedLabel:
        """A class id (single-label), a float (regression) or a multi-hot tuple (multi-label)."""
        if self.problem_type == REGRESSION:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                raise FinetuneDataError(f"{record.where}: label {value!r} is not a finite "
                                        "number, but this is a regression task")
            return float(value)
        if self.problem_type == MULTI_LABEL:
            if not isinstance(value, list):
                raise FinetuneDataError(f"{record.where}: label {value!r} is not a list, but "
                                        "this is a multi-label task; write e.g. [\"a\", \"b\"]")
            hot = [0] * len(self.names)
            for item in value:
                hot[self._class_id(item, record)] = 1
            return tuple(hot)
        if isinstance(value, list):
            raise FinetuneDataError(f"{record.where}: label {value!r} is a list, but this is a "
                                    "single-label task")
        return self._class_id(value, record)


def read_label_set(records: Sequence[Record], problem_type: Optional[str] = None,
                   field: str = "label") -> LabelSet:
    """The label set of training records; `problem_type` None infers it from the first label
    and requires the others to agree."""
    if problem_type is None:
        problem_type = infer_problem_type(records[0].fields[field], records[0])
    if problem_type == REGRESSION:
        label_set = LabelSet(REGRESSION)
        for record in records:
            label_set.encode(record.fields[field], record)
        return label_set
    names = set()
    for record in records:
        value = record.fields[field]
        items = value if problem_type == MULTI_LABEL and isinstance(value, list) else [value]
        if problem_type == MULTI_LABEL and not isinstance(value, list) or \
                problem_type == SINGLE_LABEL and isinstance(value, list):
            kind = "multi-label (a list)" if problem_type == MULTI_LABEL else \
                "single-label (one string)"
            raise FinetuneDataError(f"{record.where}: label {value!r} does not fit the "
                                    f"{kind} labels of this task; use one kind of label "
                                    "throughout the file (or --problem-type)")
        for item in items:
            name = _label_name(item)
            if name is None:
                raise FinetuneDataError(f"{record.where}: label {item!r} cannot name a class; "
                                        "class labels are strings (or integers with "
                                        f"--problem-type {SINGLE_LABEL})")
            names.add(name)
    if len(names) < 2:
        raise FinetuneDataError(f"{records[0].source}: the training data has only the label(s) "
                                f"{sorted(names)}; a classifier needs at least two")
    return LabelSet(problem_type, tuple(sorted(names, key=_sort_key)))
