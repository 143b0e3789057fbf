"""The `--task` values, how each reads its files, and which heads may score it.

Two kinds of task:
- `LabelTask` (text-classification, boolq, rte, cb, wic): every example has one label (or a
  number / several labels for text-classification); the cloze head's candidates are the
  labels' verbalizers, in label order, so a label's id is its choice index.
- `ChoiceTask` (multiple-choice, copa): every example brings its own choices and the label is
  the index of the right one; only the cloze head can score it.

Splits are "train", "valid" and "test": labels are required in train and valid data and
optional in test data (an unlabeled example gets label -1, see `examples`). COPA adds GLM's
mirrored examples (choices swapped) to its train split only.

`build_task(...)` makes a task from the data flags and `check_head(task, head)` refuses a head
that cannot score it; both raise FinetuneDataError with the flag to change.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from . import multiple_choice, superglue, text_classification
from .errors import FinetuneDataError
from .examples import ClozeExample, SequenceExample
from .jsonl import Record, read_json_lines
from .labels import MULTI_LABEL, REGRESSION, SINGLE_LABEL, LabelSet, read_label_set
from .metrics import task_metric_names

TASKS = ("text-classification", "multiple-choice") + tuple(superglue.TASKS)
HEADS = ("cloze", "seq-cls")
SPLITS = ("train", "valid", "test")
LABEL_KINDS = (str, bool, int, float, list)


def _check_split(split: str):
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: choose one of {', '.join(SPLITS)}")


def _labeled(record: Record, split: str) -> bool:
    return split != "test" or record.has("label")


class LabelTask:
    """A classification task; `pattern(fields, record)` gives a cloze example's parts and
    `pair(fields)` the (text, text_pair) of the sequence-classification head."""

    def __init__(self, name: str, label_set: LabelSet, needs: str,
                 read_fields: Callable[[Record], dict], pattern: Callable[[dict, Record], list],
                 verbalizers: dict, pair: Callable[[dict], tuple]):
        self.name, self.label_set, self.needs = name, label_set, needs
        self._read_fields, self._pattern, self._pair = read_fields, pattern, pair
        self.verbalizers = verbalizers
        self.metric_names = task_metric_names(name, label_set)

    @property
    def num_choices(self) -> int:
        return self.label_set.num_labels

    def _records(self, path: str, split: str):
        _check_split(split)
        for index, record in enumerate(read_json_lines(path)):
            fields = self._read_fields(record)
            label = self.label_set.encode(record.get("label", LABEL_KINDS, self.needs), record) \
                if _labeled(record, split) else None
            yield index, record, fields, label

    def cloze_examples(self, path: str, split: str) -> list:
        check_head(self, "cloze")
        names = self.label_set.names
        answers = tuple(self.verbalizers[name] for name in names)
        return [ClozeExample(self._pattern(fields, record), answers,
                             -1 if label is None else label, index, record.line, names)
                for index, record, fields, label in self._records(path, split)]

    def sequence_examples(self, path: str, split: str) -> list:
        return [SequenceExample(*self._pair(fields),
                                self._unlabeled() if label is None else label, index,
                                record.line)
                for index, record, fields, label in self._records(path, split)]

    def _unlabeled(self):
        if self.label_set.problem_type == REGRESSION:
            return math.nan
        if self.label_set.problem_type == MULTI_LABEL:
            return (-1,) * self.label_set.num_labels
        return -1


class ChoiceTask:
    """A multiple-choice task: `read(record, split)` gives (fields, label or None) and
    `build(fields)` (parts, answers); `mirror(fields, label)` the extra training example, if
    any."""

    label_set = None
    metric_names = ("accuracy",)

    def __init__(self, name: str, read: Callable, build: Callable,
                 mirror: Optional[Callable] = None):
        self.name = name
        self._read, self._build, self._mirror = read, build, mirror

    def cloze_examples(self, path: str, split: str) -> list:
        _check_split(split)
        examples, mirrored = [], []
        for index, record in enumerate(read_json_lines(path)):
            fields, label = self._read(record, split)
            examples.append(ClozeExample(*self._build(fields), -1 if label is None else label,
                                         index, record.line))
            if self._mirror is not None and split == "train":
                fields, label = self._mirror(fields, label)
                mirrored.append(ClozeExample(*self._build(fields), label, index, record.line))
        return examples + mirrored

    def sequence_examples(self, path: str, split: str) -> list:
        check_head(self, "seq-cls")


def max_num_choices(*example_lists: Sequence[ClozeExample]) -> int:
    """The choice dimension that fits every example of the given splits (static batches)."""
    return max(len(example.answers) for examples in example_lists for example in examples)


def parse_verbalizers(values: Sequence[str], label_names: Sequence[str]) -> dict:
    """`--verbalizer LABEL=WORDS` values as {label: words}."""
    chosen = {}
    for value in values:
        label, equals, words = value.partition("=")
        if not equals or not words.strip():
            raise FinetuneDataError(f"--verbalizer {value!r}: write LABEL=WORDS, e.g. "
                                    f"--verbalizer {label_names[0]}=word")
        if label not in label_names:
            known = ", ".join(map(repr, label_names))
            raise FinetuneDataError(f"--verbalizer {value!r}: label {label!r} is not one of the "
                                    f"task's labels ({known}); fix the label name")
        if label in chosen:
            raise FinetuneDataError(f"--verbalizer: label {label!r} is given twice; keep one "
                                    f"--verbalizer {label}=WORDS")
        chosen[label] = words
    return chosen


def build_task(name: str, *, train_data: Optional[str] = None,
               label_set: Optional[LabelSet] = None, pattern_id: Optional[int] = None,
               pattern: Optional[str] = None, verbalizers: Sequence[str] = (),
               problem_type: Optional[str] = None):
    """The task `--task NAME` with its data flags. text-classification reads its label set
    from `train_data` unless `label_set` (e.g. from a checkpoint) is given."""
    if name not in TASKS:
        raise FinetuneDataError(f"--task {name!r}: choose one of {', '.join(TASKS)}")
    if pattern is not None and name != "text-classification":
        raise FinetuneDataError(f"--pattern applies to --task text-classification; --task "
                                f"{name} " + ("has --pattern-id" if name in superglue.TASKS
                                              else "puts the answer at [MASK] in its context"))
    if pattern_id is not None and name not in superglue.TASKS:
        raise FinetuneDataError(f"--pattern-id applies to the SuperGLUE tasks "
                                f"({', '.join(superglue.TASKS)}); drop it for --task {name}")
    if problem_type is not None and problem_type != SINGLE_LABEL and \
            name != "text-classification":
        raise FinetuneDataError(f"--problem-type {problem_type}: --task {name} is "
                                f"{SINGLE_LABEL}; other problem types need --task "
                                "text-classification")
    if name == "multiple-choice" or name == "copa":
        if verbalizers:
            raise FinetuneDataError(f"--verbalizer applies to tasks with labels; the answers "
                                    f"of --task {name} are its choices")
        if name == "multiple-choice":
            return ChoiceTask(name, multiple_choice.read, multiple_choice.build)
        spec = superglue.TASKS[name]
        pattern_id = spec.check_pattern_id(pattern_id)
        return ChoiceTask(name, superglue.read_copa,
                          lambda fields: superglue.build_copa(fields, pattern_id),
                          superglue.mirror_copa)
    if name == "text-classification":
        if label_set is None:
            label_set = _training_label_set(train_data, problem_type)
        template = text_classification.parse_pattern(
            text_classification.DEFAULT_PATTERN if pattern is None else pattern)
        default_words = {label: label for label in label_set.names}
        return LabelTask(name, label_set, text_classification.NEEDS,
                         text_classification.read_fields,
                         lambda fields, record: text_classification.pattern_parts(
                             template, fields, record),
                         {**default_words, **parse_verbalizers(verbalizers, label_set.names)},
                         text_classification.pair)
    spec = superglue.TASKS[name]
    pattern_id = spec.check_pattern_id(pattern_id)
    defaults = spec.verbalizer(pattern_id)
    # GLM's verbalizers start with the space before the word (" Yes"); an override keeps it.
    overrides = {label: " " + words.lstrip() if defaults[label][:1] == " " else words
                 for label, words in parse_verbalizers(verbalizers, spec.labels).items()}
    return LabelTask(name, LabelSet(SINGLE_LABEL, spec.labels), spec.needs, spec.read_fields,
                     lambda fields, record: spec.pattern(fields, pattern_id),
                     {**defaults, **overrides}, spec.pair)


def _training_label_set(train_data: Optional[str], problem_type: Optional[str]) -> LabelSet:
    if train_data is None:
        raise FinetuneDataError("--task text-classification reads its labels from "
                                "--train-data; give it (or a checkpoint that stores them)")
    records = read_json_lines(train_data)
    for record in records:
        record.get("label", LABEL_KINDS, text_classification.NEEDS)
    return read_label_set(records, problem_type)


def check_head(task, head: str):
    """FinetuneDataError when `--head` cannot score `task`."""
    if head not in HEADS:
        raise FinetuneDataError(f"--head {head!r}: choose one of {', '.join(HEADS)}")
    if head == "seq-cls" and isinstance(task, ChoiceTask):
        raise FinetuneDataError(f"--head seq-cls cannot score --task {task.name}: its answers "
                                "are each example's own choices; use --head cloze")
    if head == "cloze" and isinstance(task, LabelTask) and \
            task.label_set.problem_type != SINGLE_LABEL:
        raise FinetuneDataError(f"--head cloze picks one label per example, but the data is "
                                f"{task.label_set.problem_type}; use --head seq-cls")
