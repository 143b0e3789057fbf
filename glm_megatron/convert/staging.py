"""Converted directories appear whole or not at all: everything is written into a hidden
temporary directory beside the target, which is renamed into place only at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from .errors import ConversionError


def check_target(target: str, flag: str, overwrite: bool):
    """Refuse a target that exists and is not empty unless `overwrite`."""
    if os.path.exists(target):
        if not os.path.isdir(target):
            raise ConversionError(f"{flag} {target} exists and is not a directory; choose "
                                  "another path")
        if os.listdir(target) and not overwrite:
            raise ConversionError(f"{flag} {target} exists and is not empty; pass --overwrite "
                                  "to replace it, or choose a new directory")


@contextlib.contextmanager
def staged_output_dir(target: str, flag: str, overwrite: bool):
    """Yields a temporary directory; on success it replaces `target`, on failure it vanishes."""
    target = os.path.abspath(target)
    check_target(target, flag, overwrite)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=parent)
    try:
        yield staging
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        if os.path.exists(target):
            displaced = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.old-", dir=parent)
            os.rename(target, os.path.join(displaced, "old"))
            os.rename(staging, target)
            shutil.rmtree(displaced, ignore_errors=True)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
