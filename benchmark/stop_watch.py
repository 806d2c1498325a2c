"""Ctrl-C that always stops a ``craft`` process, even when its main thread is stuck in native code.

Python runs a signal's handler in the main thread only when that thread is back in Python: a main
thread waiting inside a native call (a Ray call that does not return) keeps the process alive
through any number of Ctrl-C. A watcher thread sees SIGINT and SIGTERM as they arrive, through
:func:`signal.set_wakeup_fd`, and ends the process itself, with 128 + the signal's number and what
the command registered to say (the resume line), on a second signal or when the normal stop (trials
marked, servers stopped, locks released) has not ended the process within :data:`GRACE_S` seconds;
then it first prints every thread's stack, so that the stuck call is named.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable

GRACE_S = 20.0
LAST_STEP_S = 5.0  # the most a forced exit waits for the command's last step
_WATCHED = (signal.SIGINT, signal.SIGTERM)
_last_words: list[str] = []
_last_step: list[Callable[[], str | None]] = []


def say_on_forced_exit(text: str, step: Callable[[], str | None] | None = None) -> None:
    """``text`` is printed (to stderr) if the watcher has to end the process, after ``step`` (run in the
    watcher's thread for at most :data:`LAST_STEP_S` seconds; what it returns is printed too), e.g.
    marking a search's running trials."""
    _last_words[:] = [text]
    _last_step[:] = [step] if step is not None else []


def install(command: str) -> bool:
    """Start the watcher for ``craft command`` (main thread only); False where it cannot be installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    except ValueError:
        reader.close()
        writer.close()
        return False
    threading.Thread(target=_watch, args=(reader, writer, command), daemon=True, name="craft-stop-watch").start()
    return True


def _watch(reader: socket.socket, writer: socket.socket, command: str) -> None:
    """``writer`` is held here only so that the wakeup socket stays open while the process lives."""
    first: tuple[int, float] | None = None
    while True:
        reader.settimeout(None if first is None else max(0.0, first[1] + GRACE_S - time.monotonic()))
        try:
            data = reader.recv(64)
        except (socket.timeout, TimeoutError):
            assert first is not None
            _force(command, first[0], f"did not stop within {GRACE_S:.0f} s of the signal; where each thread was:", stacks=True)
            return
        for signum in (b for b in data if b in _WATCHED):
            if first is not None:
                _force(command, signum, "a second signal: stopping now")
                return
            first = (signum, time.monotonic())


def _force(command: str, signum: int, why: str, *, stacks: bool = False) -> None:
    def say(text: str) -> None:
        os.write(2, f"craft {command}: {text}\n".encode())

    say(why)
    if stacks:
        faulthandler.dump_traceback(file=sys.__stderr__ or 2, all_threads=True)
    for step in _last_step:
        said: list[str | None] = []
        worker = threading.Thread(target=lambda: said.append(step()), daemon=True)
        worker.start()
        worker.join(LAST_STEP_S)
        if said and said[0]:
            say(said[0])
    for text in _last_words:
        say(text)
    os._exit(128 + signum)
