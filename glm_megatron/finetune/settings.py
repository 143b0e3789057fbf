"""What a finetuning run records with its checkpoints: the task, the head and its scoring, the
label set and the best validation result so far.

They are stored in the checkpoint's metadata (its `finetune` record), so that a resumed run
keeps the label ids and the best result, a finetuned checkpoint can be evaluated or finetuned
further, and export names the classifier's labels. Plain data: no torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..checkpoint_format import CheckpointMetadata
from .labels import REGRESSION, LabelSet

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


def saved_settings(metadata: CheckpointMetadata) -> Optional[FinetuneSettings]:
    """The settings a checkpoint recorded; None for a pretraining checkpoint."""
    return FinetuneSettings.from_dict(metadata.finetune) if metadata.finetune else None


def hf_classifier_fields(metadata: CheckpointMetadata) -> dict:
    """transformers' config fields of a finetuned sequence classifier (problem_type, id2label,
    label2id); empty when the checkpoint does not say."""
    settings = saved_settings(metadata)
    if settings is None or settings.label_set is None:
        return {}
    labels = settings.label_set
    out = {"problem_type": labels.problem_type}
    if labels.problem_type != REGRESSION:
        out["id2label"] = {str(i): name for i, name in labels.id2label.items()}
        out["label2id"] = labels.label2id
    return out

