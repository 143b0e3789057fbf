"""`--task text-classification`: JSON lines {"text": ..., "text_pair": ... (optional),
"label": ...}, the label a string, a number (regression) or a list of strings (multi-label).

For the cloze head, `--pattern` is a template with `{text}`, `{text_pair}` and one `[MASK]`
(default DEFAULT_PATTERN); where an example has no text_pair, `{text_pair}` is left out with
one space next to it (before it, else after it). Each label's answer is the label itself
unless `--verbalizer LABEL=WORDS` says otherwise. The sequence-classification head reads
(text, text_pair).
"""

from __future__ import annotations

import re

from .errors import FinetuneDataError
from .examples import MASK, shortenable
from .jsonl import Record

DEFAULT_PATTERN = "{text} {text_pair} Answer: [MASK]."
NEEDS = "'text' and 'label' ('text_pair' optional; 'label' not in test files)"
_SLOTS = ("{text}", "{text_pair}")
_ITEM = re.compile(r"(\{[^{}]*\}|\[MASK\])")


def parse_pattern(template: str) -> tuple:
    """The template as literal strings, "{text}", "{text_pair}" and MASK."""
    items = [x for x in _ITEM.split(template) if x]
    for item in items:
        if item.startswith("{") and item not in _SLOTS:
            raise FinetuneDataError(f"--pattern {template!r}: unknown placeholder {item}; use "
                                    "{text}, {text_pair} and [MASK]")
    if items.count("[MASK]") != 1 or "{text}" not in items:
        raise FinetuneDataError(f"--pattern {template!r}: needs {{text}} and exactly one "
                                "[MASK] (where the answer goes)")
    return tuple(MASK if x == "[MASK]" else x for x in items)


def read_fields(record: Record) -> dict:
    text_pair = record.text("text_pair", NEEDS) if record.has("text_pair") else None
    return {"text": record.text("text", NEEDS), "text_pair": text_pair}


def pattern_parts(template: tuple, fields: dict, record: Record) -> list:
    if fields["text_pair"] is not None and "{text_pair}" not in template:
        raise FinetuneDataError(f"{record.where}: the example has a text_pair but --pattern has "
                                "no {text_pair}; add {text_pair} to --pattern")
    parts, drop_space = [], False
    for item in template:
        if item == "{text}":
            parts.append(shortenable(fields["text"]))
        elif item == "{text_pair}":
            if fields["text_pair"] is not None:
                parts.append(shortenable(fields["text_pair"]))
            elif parts and isinstance(parts[-1], str) and parts[-1][-1:].isspace():
                parts[-1] = parts[-1][:-1]
            else:
                drop_space = True
        else:
            parts.append(item[1:] if drop_space and item[:1].isspace() else item)
            drop_space = False
    return parts


def pair(fields: dict) -> tuple:
    return fields["text"], fields["text_pair"]
