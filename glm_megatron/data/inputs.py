"""Training text from files: JSON lines, plain text, and folders of them, read as documents.

Both data tools read their --input this way (tools/preprocess_data.py tokenizes the documents,
tools/train_tokenizer.py trains SentencePiece on them):

- A file named *.jsonl or *.json is JSON lines, as Megatron-LM's preprocess_data.py reads it:
  one JSON object per line, a document's text under each of --json-keys (a string, or a list of
  strings that are tokenized one by one and concatenated, as Megatron-LM does). Blank lines are
  ignored.
- Any other file is UTF-8 text: one document per block of lines between blank lines
  (TEXT_DOCUMENTS "blank-line", the default), or the whole file as one document ("file").
  A plain-text document is the value of the key "text".
- A folder stands for the files under it, recursively, in sorted order of their paths; names
  starting with "." are left out. Each file is read by its own name as above.

Reading is split in two so that the costly half can run in worker processes: `iter_records`
reads raw bytes in input order (one process), `decode_record` turns a record into the text of
each key (UTF-8 decoding, JSON parsing). A document that cannot be used (not UTF-8, not JSON, no
such key, not a string) is returned as a `Skip` with the reason, never raised: a corpus with a
few bad lines still goes through, and the tools report what they left out. Problems that mean
the command itself is wrong raise InputError with a one-line message naming the flag: an input
that does not exist, inputs that hold no data, a JSON file whose first record lacks a key.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, NamedTuple, Sequence, Union

JSON_SUFFIXES = (".jsonl", ".json")
TEXT_DOCUMENTS = ("blank-line", "file")
TEXT_KEY = "text"  # the key that plain-text documents are read under


class InputError(ValueError):
    """A data tool's flags name input it cannot use; the message is one line naming the flag
    and the fix."""


class Skip(NamedTuple):
    """Why a document was left out; `reason` is short and the same for alike cases, so that
    reports can count them."""
    reason: str


class Record(NamedTuple):
    """One document's raw bytes and where it came from."""
    is_json: bool
    data: bytes
    file: int   # index into the file list
    line: int   # 1-based line the document starts on
    nbytes: int  # input bytes it accounts for (separators included), for progress


def is_json_lines(path: str) -> bool:
    return path.lower().endswith(JSON_SUFFIXES)


def list_input_files(inputs: Sequence[str], flag: str = "--input") -> list[str]:
    """The files that `inputs` name, folders expanded; InputError for a missing input or when
    there is no file at all. Other non-folder paths (a named pipe, /dev/stdin) count as files."""
    if not inputs:
        raise InputError(f"{flag}: give at least one file or folder")
    files = []
    for path in inputs:
        if not os.path.exists(path):
            raise InputError(f"{flag} {path}: no such file or folder; check the path")
        if not os.path.isdir(path):
            files.append(path)
            continue
        found = []
        for root, dirs, names in os.walk(path, onerror=_raise):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found += [os.path.join(root, n) for n in names if not n.startswith(".")]
        if not found:
            raise InputError(f"{flag} {path}: the folder holds no files; give a folder of "
                             ".jsonl/.json or text files")
        files += sorted(found)
    return files


def _raise(error: OSError):
    raise error


def check_inputs(files: Sequence[str], json_keys: Sequence[str], flag: str = "--input"):
    """Fail fast on inputs that cannot give any document: all files empty, plain-text files
    while --json-keys has no "text", a JSON-lines file whose first record is not an object with
    every key. Reads only the first line of each regular JSON-lines file (pipes are checked as
    they are read, by iter_records)."""
    if all(_size(f) == 0 for f in files):
        where = f"{files[0]} is empty" if len(files) == 1 else \
            f"all {len(files)} files are empty"
        raise InputError(f"{flag}: {where} (no documents); give files with text")
    if TEXT_KEY not in json_keys:
        for path in files:
            if not is_json_lines(path):
                raise InputError(
                    f"{flag} {path} is plain text, read under the key {TEXT_KEY!r}, but "
                    f"--json-keys is {' '.join(json_keys)}; add {TEXT_KEY} to --json-keys or "
                    "give only .jsonl/.json inputs")
    for path in files:
        if is_json_lines(path) and os.path.isfile(path):
            with _open(path, flag) as f:
                for number, line in enumerate(f, 1):
                    if line.strip():
                        check_first_record(line, json_keys, path, number, flag)
                        break


def check_first_record(line: bytes, json_keys: Sequence[str], path: str, number: int,
                       flag: str = "--input"):
    """The first record of a JSON-lines file decides whether the file and the keys fit: a key
    it lacks is taken for a wrong --json-keys, not for a document to skip."""
    try:
        record = json.loads(line)
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError both are
        raise InputError(f"{flag} {path}: line {number} is not JSON ({error}); a .jsonl/.json "
                         "input holds one JSON object per line") from None
    if not isinstance(record, dict):
        raise InputError(f"{flag} {path}: line {number} is a JSON {_json_type(record)}, not an "
                         "object; a .jsonl/.json input holds one JSON object per line")
    missing = [k for k in json_keys if k not in record]
    if missing:
        keys = ", ".join(map(repr, record)) or "none"
        raise InputError(f"--json-keys: {path} line {number} has no key {missing[0]!r} (its keys: "
                         f"{keys}); give --json-keys with the key that holds the text")


def iter_records(files: Sequence[str], json_keys: Sequence[str],
                 text_documents: str = "blank-line", flag: str = "--input") -> Iterator[Record]:
    """Every document of `files` in order, as raw bytes; OSError (as InputError) when a file
    cannot be read."""
    if text_documents not in TEXT_DOCUMENTS:
        raise ValueError(f"text_documents {text_documents!r} is not one of {TEXT_DOCUMENTS}")
    for index, path in enumerate(files):
        with _open(path, flag) as f:
            try:
                if is_json_lines(path):
                    yield from _json_records(f, index, path, json_keys, flag)
                elif text_documents == "file":
                    data = f.read()
                    yield Record(False, data, index, 1, len(data))
                else:
                    yield from _block_records(f, index)
            except OSError as error:
                raise InputError(f"{flag} {path}: reading it failed ({error})") from error


def _json_records(f, index: int, path: str, json_keys, flag) -> Iterator[Record]:
    first = True
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        if first:  # already checked for regular files; this catches pipes
            check_first_record(line, json_keys, path, number, flag)
            first = False
        yield Record(True, line, index, number, len(line))


def _block_records(f, index: int) -> Iterator[Record]:
    lines, start, nbytes = [], 0, 0
    for number, line in enumerate(f, 1):
        nbytes += len(line)
        if line.strip():
            if not lines:
                start = number
            lines.append(line)
        elif lines:
            yield Record(False, _strip_newline(b"".join(lines)), index, start, nbytes)
            lines, nbytes = [], 0
    if lines:  # trailing blank lines are no document
        yield Record(False, _strip_newline(b"".join(lines)), index, start, nbytes)


def _strip_newline(block: bytes) -> bytes:
    if block.endswith(b"\n"):
        block = block[:-2] if block.endswith(b"\r\n") else block[:-1]
    return block


def decode_record(record: Record, json_keys: Sequence[str]) -> list[Union[list[str], Skip]]:
    """Per key, the document's text pieces (one string, or a JSON list's strings), or a Skip.
    Plain-text records give their text under "text" and Skip('no key ...') elsewhere."""
    try:
        text = record.data.decode("utf-8")
    except UnicodeDecodeError:
        return [Skip("not UTF-8")] * len(json_keys)
    if not record.is_json:
        return [[text] if key == TEXT_KEY else Skip(f"no key {key!r} (plain text)")
                for key in json_keys]
    try:
        value = json.loads(text)
    except ValueError:
        return [Skip("not JSON")] * len(json_keys)
    if not isinstance(value, dict):
        return [Skip(f"a JSON {_json_type(value)}, not an object")] * len(json_keys)
    return [_pieces(value, key) for key in json_keys]


def _pieces(record: dict, key: str) -> Union[list[str], Skip]:
    if key not in record:
        return Skip(f"no key {key!r}")
    value = record[key]
    pieces = value if isinstance(value, list) else [value]
    for piece in pieces:
        if not isinstance(piece, str):
            return Skip(f"{key!r} is a JSON {_json_type(piece)}, not a string")
        try:
            piece.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
            return Skip("not UTF-8 (lone surrogate)")
    return pieces


def _json_type(value) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _size(path: str) -> int:
    """Bytes in a regular file; -1 (unknown) for anything else."""
    return os.path.getsize(path) if os.path.isfile(path) else -1


def total_bytes(files: Sequence[str]) -> int | None:
    """Input size for a progress bar; None when a file's size is unknown (a pipe)."""
    sizes = [_size(f) for f in files]
    return None if min(sizes) < 0 else sum(sizes)


def _open(path: str, flag: str):
    try:
        return open(path, "rb")
    except OSError as error:
        raise InputError(f"{flag} {path}: cannot open it ({error.strerror or error}); check "
                         "the path and its permissions") from error


def describe_location(files: Sequence[str], record: Record) -> str:
    return f"{files[record.file]}:{record.line}"
