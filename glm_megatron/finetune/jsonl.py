"""JSON-lines data files: one JSON object per line; blank lines are skipped.

A `Record` keeps the object with its file and 1-based line number, so that every complaint
about it can say where it is. Problems (missing or empty file, malformed JSON, a line that is
not an object, a missing field or a field of the wrong type) raise FinetuneDataError.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from .errors import FinetuneDataError


@dataclass(frozen=True)
class Record:
    source: str
    line: int
    fields: dict

    @property
    def where(self) -> str:
        return f"{self.source} line {self.line}"

    def has(self, name: str) -> bool:
        return self.fields.get(name) is not None

    def get(self, name: str, kinds: tuple, needs: str) -> Any:
        """The field's value; FinetuneDataError when it is absent (or null) or not one of
        `kinds` (bool is never taken for a number). `needs` lists what a line of this file
        must hold, for the message."""
        if not self.has(name):
            raise FinetuneDataError(f"{self.where}: missing field {name!r}; every line of this "
                                    f"file needs {needs}")
        value = self.fields[name]
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(KIND_NAMES[k] for k in kinds)
            raise FinetuneDataError(f"{self.where}: field {name!r} must be {names}, got "
                                    f"{json.dumps(value)[:60]}")
        return value

    def text(self, name: str, needs: str) -> str:
        return self.get(name, (str,), needs)


KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false",
              list: "a list"}


def read_json_lines(path: str) -> list[Record]:
    """Every non-blank line of `path` as a Record (at least one)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not text
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise FinetuneDataError(f"{path}: no such file; give the path of a JSON-lines data "
                                "file") from None
    except UnicodeDecodeError as e:
        raise FinetuneDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save "
                                "the file as UTF-8") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except json.JSONDecodeError as e:
            raise FinetuneDataError(f"{path} line {number}: not valid JSON ({e.msg} at column "
                                    f"{e.colno}); each line must be one JSON object") from None
        if not isinstance(fields, dict):
            raise FinetuneDataError(f"{path} line {number}: a JSON {type(fields).__name__}, "
                                    "not an object; each line must be one JSON object")
        records.append(Record(path, number, fields))
    if not records:
        raise FinetuneDataError(f"{path}: no examples (the file is empty); give a JSON-lines "
                                "file with one example per line")
    return records
