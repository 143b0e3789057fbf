"""SuperGLUE's JSON-lines files, read with their own field names, as GLM reads them.

    boolq  {"passage", "question", "label": true/false, "idx"}
    rte    {"premise", "hypothesis", "label": "entailment" | "not_entailment", "idx"}
    cb     {"premise", "hypothesis", "label": "entailment" | "contradiction" | "neutral", "idx"}
    wic    {"word", "sentence1", "sentence2", "start1", "end1", "start2", "end2",
            "label": true/false, "idx"}
    copa   {"premise", "choice1", "choice2", "question": "cause" | "effect", "label": 0 | 1,
            "idx"}

Labels are GLM's label lists, in GLM's order (true/false become "true"/"false"); test files
have no label. Text fields get GLM's punctuation standardisation (curly quotes to straight,
en dash to hyphen). Fields not listed (idx, the WiC offsets) are not used. The sequence-
classification head reads (passage, question), (premise, hypothesis) and, for WiC, GLM's
("WORD: sentence1", sentence2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from . import superglue_patterns as patterns
from .errors import FinetuneDataError
from .jsonl import Record

_PUNCTUATION = {"\u201c": '"', "\u201d": '"', "\u2019": "'", "\u2018": "'", "\u2013": "-"}


def standardize_punctuation(text: str) -> str:
    for curly, plain in _PUNCTUATION.items():
        text = text.replace(curly, plain)
    return text


def _needs(fields: tuple, label: str) -> str:
    return ", ".join(repr(f) for f in fields) + f" and 'label' ({label}; not in test files)"


@dataclass(frozen=True)
class SuperGLUETask:
    name: str
    fields: tuple
    labels: tuple
    label_description: str
    pattern_ids: tuple
    default_pattern_id: int  # GLM's config_tasks/task_<name>.sh
    pattern: Callable
    verbalizer: Optional[Callable] = None
    pair: Optional[Callable] = None

    @property
    def needs(self) -> str:
        return _needs(self.fields, self.label_description)

    def check_pattern_id(self, pattern_id: Optional[int]) -> int:
        if pattern_id is None:
            return self.default_pattern_id
        if pattern_id not in self.pattern_ids:
            ids = ", ".join(map(str, self.pattern_ids))
            raise FinetuneDataError(f"--pattern-id {pattern_id}: --task {self.name} has GLM's "
                                    f"patterns {ids}")
        return pattern_id

    def read_fields(self, record: Record) -> dict:
        return {name: standardize_punctuation(record.text(name, self.needs))
                for name in self.fields}


TASKS = {
    "boolq": SuperGLUETask("boolq", ("passage", "question"), ("false", "true"), "true/false",
                           tuple(range(6)), 4, patterns.boolq_pattern, patterns.boolq_verbalizer,
                           lambda f: (f["passage"], f["question"])),
    "rte": SuperGLUETask("rte", ("premise", "hypothesis"), ("entailment", "not_entailment"),
                         '"entailment" or "not_entailment"', tuple(range(5)), 0,
                         patterns.rte_pattern, patterns.rte_verbalizer,
                         lambda f: (f["premise"], f["hypothesis"])),
    "cb": SuperGLUETask("cb", ("premise", "hypothesis"),
                        ("entailment", "contradiction", "neutral"),
                        '"entailment", "contradiction" or "neutral"', tuple(range(5)), 3,
                        patterns.cb_pattern, patterns.cb_verbalizer,
                        lambda f: (f["premise"], f["hypothesis"])),
    "wic": SuperGLUETask("wic", ("word", "sentence1", "sentence2"), ("false", "true"),
                         "true/false", tuple(range(3)), 1, patterns.wic_pattern,
                         patterns.wic_verbalizer,
                         lambda f: (f"{f['word']}: {f['sentence1']}", f["sentence2"])),
    "copa": SuperGLUETask("copa", ("premise", "choice1", "choice2", "question"), (),
                          "0 or 1, the right choice", (0, 1), 0, patterns.copa_pattern),
}


def read_copa(record: Record, split: str):
    """(fields, label or None) of one COPA line."""
    spec = TASKS["copa"]
    fields = spec.read_fields(record)
    if fields["question"] not in ("cause", "effect"):
        raise FinetuneDataError(f"{record.where}: field 'question' must be \"cause\" or "
                                f"\"effect\", got {fields['question']!r}")
    if split == "test" and not record.has("label"):
        return fields, None
    label = record.get("label", (int,), spec.needs)
    if label not in (0, 1):
        raise FinetuneDataError(f"{record.where}: label {label} is not 0 or 1 (choice1 or "
                                "choice2)")
    return fields, label


def build_copa(fields: dict, pattern_id: int):
    return patterns.copa_pattern(fields, pattern_id), patterns.copa_answers(fields)


def mirror_copa(fields: dict, label: int):
    """GLM's extra training example: the same premise with the choices swapped."""
    return {**fields, "choice1": fields["choice2"], "choice2": fields["choice1"]}, 1 - label
