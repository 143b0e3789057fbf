"""Files that appear whole or not at all."""

from __future__ import annotations

import os
import secrets
from typing import Optional


def fsync_dir(path: str):
    """Make a directory's entries (files created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, tmp: Optional[str] = None):
    """Write `data` to a temporary name beside `path` (default: a fresh one), fsync it, rename
    it over `path` and fsync the folder: readers see the old file or the whole new one, and a
    crash leaves no half-written file under the real name."""
    tmp = tmp or f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(os.path.dirname(os.path.abspath(path)))
