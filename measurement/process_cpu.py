"""Where a command's CPU time goes across the processes it starts (Ray's included), and how busy the CPUs were.

Run from the repository root, the command after ``--``:

    python -m measurement.process_cpu [--every 2] -- craft paper --suite builtin --no-progress

Linux only. Every ``--every`` seconds it reads ``/proc/<pid>/stat`` of the processes started since
the command (Ray's raylet, GCS and agents, its workers and actors are not children the command
waits for, so ``time`` does not count them), keeping each one's last user + system CPU seconds.
Printed at the end: CPU seconds by process title (``ray::ModelServer``, ``ray::IDLE`` for run
workers between tasks, ``raylet``, the command itself, ...), their sum, and that sum over wall
time x CPUs. A process that ends between two reads loses its last interval.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import time


def _processes(since_ticks: int, tick: int) -> dict[int, tuple[str, float]]:
    """pid -> (title, CPU seconds) of the processes started at or after ``since_ticks`` (clock ticks since boot)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[19]) < since_ticks:  # starttime
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
        out[int(name)] = (_title(argv), (int(fields[11]) + int(fields[12])) / tick)
    return out


def _title(argv: list[bytes]) -> str:
    words = [w.decode(errors="replace") for w in argv if w]
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0].split()[0]
    for w in words:
        base = os.path.basename(w)
        if base in ("raylet", "gcs_server"):
            return base
        if base.endswith(".py") or base in ("craft",):
            return base
    return " ".join(os.path.basename(w) for w in words[:3])[:60]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--every", type=float, default=2.0, help="seconds between two reads of /proc")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give the command to measure after --")
    tick = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        since = int(float(f.read().split()[0]) * tick) - 1
    last: dict[int, tuple[str, float]] = {}
    start = time.perf_counter()
    child = subprocess.Popen(command)
    while child.poll() is None:
        last.update(_processes(since, tick))
        time.sleep(args.every)
    last.update(_processes(since, tick))
    wall = time.perf_counter() - start
    by_title: collections.Counter[str] = collections.Counter()
    for title, cpu in last.values():
        by_title[title] += cpu
    total = sum(by_title.values())
    cpus = os.cpu_count() or 1
    print(f"\n{' '.join(command)}: exit {child.returncode}, {wall:.1f} s wall, {total:.1f} CPU s in "
          f"{len(last)} processes, {total / (wall * cpus):.0%} of {cpus} CPUs")
    for title, cpu in by_title.most_common():
        if cpu >= 0.05:
            print(f"{cpu:9.1f} s  {title}")


if __name__ == "__main__":
    main()
