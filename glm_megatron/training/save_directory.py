"""The --save directory of a run: checked before anything is written, continued when it already
holds a checkpoint, owned by one run at a time, cleaned of what crashes leave behind, and
pruned (--keep-last-checkpoints).

The lock is a file in the directory naming its holder (pid, host, process start time) that the
holder touches every HEARTBEAT_SECONDS. It is stale, and taken over with a note, when its holder
ran on this host and is gone (crashed, killed), or when its heartbeat is older than
STALE_AFTER_SECONDS (a holder on another host that died with its node). Two runs that would
otherwise delete each other's checkpoints (a requeued job overlapping its predecessor) are
thus refused, and a crash never blocks the next run for long.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import threading
import time
from typing import Callable, Optional

from ..atomic_write import TEMPORARY_MARK
from ..checkpoint_format import (LOCK_FILE, REPLACED_SUFFIX, STAGING_PREFIX, TRACKER,
                                 CheckpointError, iteration_dir, latest_iteration,
                                 saved_iterations)
from ..config import ConfigError

HEARTBEAT_SECONDS = 60
STALE_AFTER_SECONDS = 600


def check_writable(path: Optional[str], flag: str):
    """A directory, or a path where one can be made, that this process may write to; nothing
    is created."""
    if not path:
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{flag} {path} is a file; give a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{flag} {path}: {existing} is a file, so no directory can be made "
                          "there; give another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: {existing} is not writable (read-only file system "
                          "or permissions); give a writable path")


def resume_from_save(args) -> Optional[str]:
    """A run whose --save already holds a checkpoint and that names no --load continues it (as
    Megatron-LM launches pass one folder to both): sets args.load (and args.load_from_save)
    and returns the line that says so; None when there is nothing to continue. Whether that checkpoint belongs to this
    experiment is for the resume checks to decide."""
    args.load_from_save = False
    if args.load is not None or not args.save:
        return None
    iteration = latest_iteration(args.save)
    if iteration is None:
        return None
    args.load, args.load_from_save = args.save, True
    return (f"resuming from iteration {iteration} in --save {args.save}, which holds this "
            "run's checkpoint (--load is implied; give another --save to start afresh)")


def _process_start(pid: int) -> Optional[str]:
    """The start time of a process in clock ticks since boot (Linux), telling a reused pid
    apart; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    return start is None or _process_start(pid) in (None, start)


class SaveLock:
    """Rank 0's hold on --save; `acquire` raises CheckpointError when another run has it."""

    def __init__(self, root: str):
        self.root = root
        self.path = os.path.join(root, LOCK_FILE)
        self.token = secrets.token_hex(8)
        self.created_root = False
        self._stop = threading.Event()
        self._heartbeat: Optional[threading.Thread] = None

    def _read(self) -> Optional[str]:
        try:
            with open(self.path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(text: str) -> dict:
        try:
            holder = json.loads(text)
        except ValueError:
            return {}  # unreadable: judged by its age alone
        return holder if isinstance(holder, dict) else {}

    def _stale(self, holder: dict) -> bool:
        try:
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"], holder.get("start"))
        return age > STALE_AFTER_SECONDS

    def _refusal(self, holder: dict) -> CheckpointError:
        age = time.time() - os.stat(self.path).st_mtime
        return CheckpointError(
            f"--save {self.root} is in use by another run (pid {holder.get('pid')} on host "
            f"{holder.get('host')}, last seen {age:.0f} s ago, {self.path}); wait for it to end, "
            f"give another --save, or delete the lock if that run is gone")

    def acquire(self) -> Optional[str]:
        """Take the lock; returns a note when a stale one was taken over."""
        if not os.path.isdir(self.root):
            os.makedirs(self.root)
            self.created_root = True
        mine = {"pid": os.getpid(), "host": socket.gethostname(),
                "start": _process_start(os.getpid()), "token": self.token}
        staged = f"{self.path}.{self.token}"
        with open(staged, "w") as f:
            json.dump(mine, f)
        note = None
        try:
            for _ in range(3):
                try:
                    os.link(staged, self.path)  # atomic: fails when a lock exists
                    self._start_heartbeat()
                    return note
                except FileExistsError:
                    text = self._read()
                    if text is None:
                        continue
                    holder = self._parse(text)
                    if not self._stale(holder):
                        raise self._refusal(holder) from None
                    self._take_over(text)
                    note = (f"removed the stale lock of pid {holder.get('pid')} on host "
                            f"{holder.get('host')} from --save {self.root}")
            raise CheckpointError(f"--save {self.root}: could not take {self.path}; another run "
                                  "keeps taking it")
        finally:
            os.unlink(staged)

    def _take_over(self, stale: str):
        """Move the stale lock aside; if another run replaced it meanwhile, put theirs back."""
        aside = f"{self.path}.stale.{self.token}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        with open(aside) as f:
            moved = f.read()
        if moved != stale:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        os.unlink(aside)

    def _start_heartbeat(self):
        def beat():
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    os.utime(self.path)
                except OSError:
                    return
        self._heartbeat = threading.Thread(target=beat, name="save-lock-heartbeat", daemon=True)
        self._heartbeat.start()

    def release(self):
        self._stop.set()
        text = self._read()
        if text is not None and self._parse(text).get("token") == self.token:
            os.unlink(self.path)
        if self.created_root:  # made for this run and nothing was saved: leave no trace
            try:
                os.rmdir(self.root)
            except OSError:
                pass


def remove_leftovers(root: str) -> list[str]:
    """Remove what interrupted saves leave (staging directories, temporary trackers) and put
    back an iteration whose re-save was cut short; returns what was done. Call with the lock."""
    done = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith((STAGING_PREFIX, TRACKER + TEMPORARY_MARK)):
            shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
            done.append(f"removed {path}")
        elif name.endswith(REPLACED_SUFFIX):
            original = path[:-len(REPLACED_SUFFIX)]
            if os.path.isdir(original):
                shutil.rmtree(path)
                done.append(f"removed {path}")
            else:
                os.rename(path, original)
                done.append(f"restored {original}")
    return done


def prune(root: str, keep: int, log: Callable[[str], None]):
    """Delete all but the newest `keep` iterations; the tracker's is always kept."""
    current = latest_iteration(root)
    for iteration in saved_iterations(root)[:-keep]:
        if iteration != current:
            shutil.rmtree(iteration_dir(root, iteration))
            log(f"removed {iteration_dir(root, iteration)} (--keep-last-checkpoints {keep})")
