"""`--task multiple-choice`: JSON lines {"context": ..., "choices": [...], "label": index}.

The context may hold one `[MASK]` where the answer goes; without one the answer follows the
context after a space. The choices are the cloze head's candidate answers; the label is the
index of the right one (absent in test files). Both sides of the context are text that
`--truncate` may cut.
"""

from __future__ import annotations

from .errors import FinetuneDataError
from .examples import MASK, shortenable
from .jsonl import Record

NEEDS = ("'context', 'choices' (a list of at least two strings) and 'label' (the index of the "
         "right choice; not in test files)")


def read(record: Record, split: str):
    """(fields, label or None) of one line."""
    context = record.text("context", NEEDS)
    if context.count("[MASK]") > 1:
        raise FinetuneDataError(f"{record.where}: the context has {context.count('[MASK]')} "
                                "[MASK]s; keep one, where the answer goes (or none: then the "
                                "answer follows the context)")
    choices = record.get("choices", (list,), NEEDS)
    if len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise FinetuneDataError(f"{record.where}: field 'choices' must be a list of at least "
                                "two non-empty strings")
    if split == "test" and not record.has("label"):
        return {"context": context, "choices": choices}, None
    label = record.get("label", (int,), NEEDS)
    if not 0 <= label < len(choices):
        raise FinetuneDataError(f"{record.where}: label {label} is not an index into its "
                                f"{len(choices)} choices (0..{len(choices) - 1})")
    return {"context": context, "choices": choices}, label


def build(fields: dict):
    """(parts, answers) of one example."""
    before, mask, after = fields["context"].partition("[MASK]")
    parts = [shortenable(before), MASK, shortenable(after)] if mask else \
        [shortenable(before), " ", MASK]
    return parts, tuple(fields["choices"])
