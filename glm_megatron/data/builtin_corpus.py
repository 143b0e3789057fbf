"""English text that ships with every Python installation, so the default run needs no download.

Two sources, in this order:
- the language-reference topics behind `help("if")` (`pydoc_data.topics.topics`), one document
  per topic, sorted by name;
- the docstrings of a fixed list of pure-Python standard-library modules (packages include their
  submodules, files in sorted order): per source file one document with the module docstring and
  its top-level functions' docstrings, and one document per class with the class docstring and
  its methods' docstrings.

`python -m glm_megatron.data.builtin_corpus OUT.jsonl` writes the corpus as JSON lines (key
"text"), the input format of tools/train_tokenizer.py and tools/preprocess_data.py.

Docstrings are hard-wrapped at ~72 columns; a paragraph of plain prose lines is joined into one
line (its wrapping is layout, not text), while code, lists, tables and indented blocks keep
their lines. Otherwise the newline would be the corpus's most frequent token.

The sources are read with `ast`, never imported: importing arbitrary modules can have side
effects (`antigravity` opens a browser) and would make the text depend on which optional C
extensions are installed. For a given Python version the documents and their order are fixed.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import sysconfig
import textwrap
from typing import Iterator

from ..atomic_write import replaced_when_done

MIN_DOCUMENT_CHARS = 200

# Well-documented modules of CPython 3.11-3.13, sorted: none that 3.13 removed, no tkinter/idlelib
# (distributions ship those separately). A module missing from an installation is skipped.
STDLIB_MODULES = (
    "_collections_abc", "_pydecimal", "_pyio", "abc", "argparse", "ast", "asyncio", "base64",
    "bdb", "bisect", "bz2", "calendar", "cmd", "code", "codecs", "codeop", "collections",
    "compileall", "concurrent", "configparser", "contextlib", "copy", "csv", "ctypes",
    "dataclasses", "datetime", "dbm", "difflib", "dis", "doctest", "email", "enum", "filecmp",
    "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob",
    "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http", "imaplib", "importlib",
    "inspect", "io", "ipaddress", "json", "linecache", "locale", "logging", "lzma", "mailbox",
    "mimetypes", "modulefinder", "multiprocessing", "numbers", "operator", "optparse", "os",
    "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib",
    "pprint", "profile", "pstats", "py_compile", "pyclbr", "pydoc", "queue", "quopri", "random",
    "re", "reprlib", "rlcompleter", "runpy", "sched", "secrets", "selectors", "shelve", "shlex",
    "shutil", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string",
    "subprocess", "symtable", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "tomllib", "trace", "traceback", "tracemalloc", "turtle",
    "types", "typing", "unittest", "urllib", "uuid", "venv", "warnings", "wave", "weakref",
    "webbrowser", "wsgiref", "xml", "xmlrpc", "zipapp", "zipfile", "zipimport", "zoneinfo",
)

_SKIPPED_DIRS = {"test", "tests", "idle_test", "__pycache__"}
# A line starting like this is code, a list item, a table or a heading underline: its block
# keeps its line breaks.
_LAYOUT_LINE = re.compile(r"^(\s|>>>|\.\.\.|[-*+|#=~^`]|\d+[.)]\s|[A-Za-z][.)]\s)")


def _unwrap_paragraphs(text: str) -> str:
    """Join the lines of each blank-line-separated block made only of prose lines."""
    blocks = re.split(r"\n[ \t]*\n", text)
    for i, block in enumerate(blocks):
        lines = textwrap.dedent(block).split("\n")  # the language reference indents prose
        if len(lines) > 1 and not any(_LAYOUT_LINE.match(line) for line in lines):
            blocks[i] = " ".join(line.strip() for line in lines)
    return "\n\n".join(blocks)


def _module_files(name: str, stdlib: str) -> list[str]:
    """The .py files of one module or package, in sorted order; [] when it is not installed."""
    single = os.path.join(stdlib, name + ".py")
    if os.path.isfile(single):
        return [single]
    files = []
    for root, dirs, names in os.walk(os.path.join(stdlib, name)):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        files += [os.path.join(root, n) for n in sorted(names) if n.endswith(".py")]
    return files


def _docstrings(nodes) -> list[str]:
    found = []
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                found.append(doc)
    return found


def _class_documents(node: ast.ClassDef) -> Iterator[str]:
    yield "\n\n".join(filter(None, [ast.get_docstring(node)] + _docstrings(node.body)))
    for inner in node.body:
        if isinstance(inner, ast.ClassDef):
            yield from _class_documents(inner)


def _file_documents(path: str) -> Iterator[str]:
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return  # unreadable or newer syntax than this parser: not part of the corpus
    yield "\n\n".join(filter(None, [ast.get_docstring(tree)] + _docstrings(tree.body)))
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            yield from _class_documents(node)


def _raw_documents() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]
    stdlib = sysconfig.get_path("stdlib")
    for module in STDLIB_MODULES:
        for path in _module_files(module, stdlib):
            yield from _file_documents(path)


def iter_builtin_documents() -> Iterator[str]:
    """The corpus: stripped documents of at least MIN_DOCUMENT_CHARS characters, without exact
    duplicates (several modules repeat the same docstrings), in a fixed order."""
    seen = set()
    for text in _raw_documents():
        text = _unwrap_paragraphs(text.strip())
        if len(text) >= MIN_DOCUMENT_CHARS and text not in seen:
            seen.add(text)
            yield text


def write_jsonl(path: str) -> int:
    """Write the corpus to `path` as JSON lines (written beside it, then renamed into place);
    returns the number of documents."""
    with replaced_when_done(path) as (partial,), open(partial, "w", encoding="utf-8") as f:
        count = 0
        for count, text in enumerate(iter_builtin_documents(), 1):
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return count


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m glm_megatron.data.builtin_corpus OUT.jsonl")
    print(f"wrote {write_jsonl(sys.argv[1])} documents to {sys.argv[1]}")
