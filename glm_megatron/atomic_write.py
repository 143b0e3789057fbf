"""Files that appear whole or not at all."""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Iterator


def fsync_dir(path: str):
    """Make a directory's entries (files created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Temporary files are named PATH + TEMPORARY_MARK + a unique suffix.
TEMPORARY_MARK = ".tmp-"


def temporary_name(path: str) -> str:
    """A fresh name beside `path` (same folder, so the final rename is atomic)."""
    return f"{path}{TEMPORARY_MARK}{os.getpid()}-{secrets.token_hex(4)}"


@contextlib.contextmanager
def replaced_when_done(*paths: str) -> Iterator[list[str]]:
    """Temporary names beside `paths`, to be written in the block. When it ends without error
    they are fsynced and renamed over `paths` in the order given (so a reader that needs
    several files can rely on that order), then the folders are fsynced; when it raises they
    are removed. Readers see the old files or whole new ones, never a half-written file."""
    temps = [temporary_name(path) for path in paths]
    try:
        yield temps
        for tmp in temps:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        for tmp, path in zip(temps, paths):
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for folder in {os.path.dirname(os.path.abspath(path)) for path in paths}:
        fsync_dir(folder)


def write_atomically(path: str, data: bytes):
    """Write `data` to `path` whole or not at all (see `replaced_when_done`)."""
    with replaced_when_done(path) as (tmp,):
        with open(tmp, "wb") as f:
            f.write(data)
