"""What a task reader hands to the encoders, before tokenization.

- `ClozeExample` (the cloze head): a pattern as a sequence of text parts and one MASK; the
  candidate answers (the label verbalizers, or the example's own choices); the gold answer.
  The text of the whole example is the parts joined, with an answer in place of MASK.
  Shortenable parts are the ones `--truncate` may cut (the data; never the pattern's own words,
  the mask or an answer).
- `SequenceExample` (the sequence-classification head): a text, an optional second text and
  the encoded label (class id, regression target or multi-hot tuple).
Both carry `index` (the example's ordinal in its file, which predictions are keyed by) and
`line` (its line in the file, for messages). Unlabeled test examples have label -1 (class id or
choice), NaN (regression) or a row of -1 (multi-label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .labels import EncodedLabel


@dataclass(frozen=True)
class Text:
    text: str
    shortenable: bool = False


class _Mask:
    def __repr__(self):
        return "MASK"


MASK = _Mask()  # where the answer goes
Part = Union[Text, _Mask]


def shortenable(text: str) -> Text:
    return Text(text, shortenable=True)


def as_parts(items) -> tuple:
    """Plain strings become fixed Text parts; Text parts and MASK are kept; empty text is
    dropped."""
    parts = tuple(Text(x) if isinstance(x, str) else x for x in items)
    return tuple(p for p in parts if p is MASK or p.text)


@dataclass(frozen=True)
class ClozeExample:
    parts: tuple
    answers: tuple
    label: int
    index: int
    line: int
    # The label names when the answers are label verbalizers (one per label, in label order),
    # None when they are the example's own choices: messages about an answer name its label.
    label_names: Optional[tuple] = None

    def __post_init__(self):
        object.__setattr__(self, "parts", as_parts(self.parts))
        masks = sum(p is MASK for p in self.parts)
        if masks != 1:
            raise ValueError(f"a cloze pattern needs exactly one MASK, got {masks}")
        if not self.answers:
            raise ValueError("a cloze example needs at least one answer")
        if not -1 <= self.label < len(self.answers):
            raise ValueError(f"label {self.label} is not an index into {len(self.answers)} "
                             "answers (or -1)")


@dataclass(frozen=True)
class SequenceExample:
    text: str
    text_pair: Optional[str]
    label: EncodedLabel
    index: int
    line: int
