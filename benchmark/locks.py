"""Advisory locks that name their holder: one ``craft`` process per results folder or study storage.

Two drivers on one results folder would each compute every cell, and two searches on one Optuna
journal mark each other's running trials failed. A lock is an ``flock`` on a file that holds its
holder's host, pid, command and start time (JSON). The kernel drops an ``flock`` when its process
ends however it ends, so a lock left by a killed process is taken over without asking (a lock
file whose process is gone is stale by construction); on NFS, Linux maps ``flock`` to NFS locks.
Locks are re-entrant within one process (``craft tune`` locks its storage, then its final
evaluation the results folder; ``craft bench`` locks before Ray starts and again in the runner).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from benchmark.errors import UserError

_held: dict[str, int] = {}  # lock path -> times entered by this process


def _holder(fd: int) -> str:
    """Who the lock file says holds it, as words."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8"))
        return (f"{info.get('command', 'a craft process')} (pid {info['pid']} on host {info['host']}, "
                f"since {info.get('since', '?')})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names none; it may be starting)"


def _acquire(path: str, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{what} is in use by {holder}; wait for it to end or stop it "
                            f"(two at once would repeat or spoil each other's work; lock {path})") from None
        try:  # the previous holder may have removed the file between our open and our lock: try again
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = {"host": socket.gethostname(), "pid": os.getpid(),
            "command": f"craft {sys.argv[1]}" if len(sys.argv) > 1 and os.path.basename(sys.argv[0]) in ("craft", "cli.py")
            else "a craft process",
            "since": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps(info).encode("utf-8"))
    return fd


@contextmanager
def hold(path: str, what: str) -> Iterator[None]:
    """Hold the lock at ``path`` while the block runs; UserError naming the holder if another process has it.

    ``what`` names the guarded thing in that error (e.g. ``results folder results/demo``). The lock
    file is removed on release (before unlocking, so that a process that opened it meanwhile sees a
    removed file and tries again).
    """
    path = os.path.abspath(path)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = _acquire(path, what)
    _held[path] = 1
    try:
        yield
    finally:
        del _held[path]
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
