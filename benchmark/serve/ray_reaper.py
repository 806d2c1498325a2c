"""Ends what is left of a local Ray runtime once the ``craft`` process that started it is gone.

Ray ties its GCS and raylet to the driver that started them, but not its dashboard and
runtime-env agents: after a driver is killed (SIGKILL, OOM) they stay, about 210 MB, with sockets
open. :func:`start` spawns this module as a small watcher in its own session; when the driver's
process ends, however it ends, the watcher ends every Ray process of this user (``ray::`` titles, or
a program of the ray package) that holds a file in the runtime's session folder (so, that
runtime's, and nothing else: not a ``tail -f`` on its logs), SIGTERM first, then SIGKILL after a
few seconds, and exits. After a clean exit it finds nothing to end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 1.0
GRACE_S = 3.0


def start(session_dir: str, ray_dir: str) -> subprocess.Popen:
    """Watch this process; when it ends, end the processes of the Ray runtime in ``session_dir``
    (``ray_dir``: the ray package's folder, where Ray's programs are)."""
    return subprocess.Popen([sys.executable, "-m", "benchmark.serve.ray_reaper", str(os.getpid()), _start_time(os.getpid()),
                             session_dir, ray_dir], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks (/proc/PID/stat field 22): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _is_ray(pid: str, ray_dir: str) -> bool:
    """Whether a process is one of Ray's: a ``ray::`` title, or an argument inside the ray package."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().decode("utf-8", "replace").split("\0")
    return argv[0].startswith("ray::") or any(a.startswith(ray_dir + os.sep) for a in argv[:2])


def holders(session_dir: str, ray_dir: str) -> list[int]:
    """Pids of this user's Ray processes (not this one) with an open file or working folder in ``session_dir``."""
    prefix = os.path.realpath(session_dir) + os.sep
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                continue
            links = [os.readlink(f"/proc/{entry}/cwd")]
            links += [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in os.listdir(f"/proc/{entry}/fd")]
        except OSError:  # ended meanwhile, or not ours to read
            continue
        try:
            if any((link + os.sep).startswith(prefix) for link in links) and _is_ray(entry, ray_dir):
                found.append(int(entry))
        except OSError:
            continue
    return found


def end(session_dir: str, ray_dir: str) -> list[int]:
    """End the processes of the runtime in ``session_dir``: SIGTERM, then SIGKILL what is left; return their pids."""
    pids = holders(session_dir, ray_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main(argv: list[str]) -> int:
    pid, started, session_dir, ray_dir = int(argv[0]), argv[1], argv[2], argv[3]
    while _start_time(pid) == started and started:
        time.sleep(POLL_S)
    end(session_dir, ray_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
