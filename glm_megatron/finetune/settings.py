"""What a finetuning run records with its checkpoints: the task, the head and its scoring, the
label set and the best validation result so far.

They are stored in the checkpoint's metadata args under `finetune` (beside the flags), so that
a resumed run keeps the label ids and the best result, a finetuned checkpoint can be evaluated
or finetuned further, and export names the classifier's labels. Plain data: no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .labels import REGRESSION, LabelSet

KEY = "finetune"


@dataclass
class BestResult:
    iteration: int
    metric: str
    value: float


@dataclass
class FinetuneSettings:
    task: str
    head: str  # cloze | seq-cls
    scoring: str  # single-token | multi-token (cloze), rightmost-token (seq-cls)
    label_set: Optional[LabelSet]  # None for multiple-choice tasks
    length_penalty: float
    seq_length: int
    prepend_cls: bool
    best: Optional[BestResult] = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["label_set"] = self.label_set.to_dict() if self.label_set is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "FinetuneSettings":
        values = dict(data)
        if values.get("label_set") is not None:
            values["label_set"] = LabelSet.from_dict(values["label_set"])
        if values.get("best") is not None:
            values["best"] = BestResult(**values["best"])
        return cls(**values)


def saved_settings(args: dict) -> Optional[FinetuneSettings]:
    """The settings in a checkpoint's metadata args; None for a pretraining checkpoint."""
    data = (args or {}).get(KEY)
    return FinetuneSettings.from_dict(data) if data else None


def hf_classifier_fields(args: dict) -> dict:
    """transformers' config fields of a finetuned sequence classifier (problem_type, id2label,
    label2id); empty when the checkpoint does not say."""
    settings = saved_settings(args)
    if settings is None or settings.label_set is None:
        return {}
    labels = settings.label_set
    out = {"problem_type": labels.problem_type}
    if labels.problem_type != REGRESSION:
        out["id2label"] = {str(i): name for i, name in labels.id2label.items()}
        out["label2id"] = labels.label2id
    return out

