"""Scheduling a sweep's cells on the server pool: CPU-only tasks run the methods, the driver writes results.

A run reserves one CPU and no GPU: the GPU is counted once, by its server (Ray would leave runs
pending forever if both reserved it). Each server takes ``runs_per_server`` runs at once, on the
least loaded server of the run's key (:mod:`benchmark.serve.pool`).

Faults: a run whose process or node dies is run again by Ray (``max_retries``); a run whose server
died moves to another server of its key, or waits for Ray to restart it (features from the disk
cache). The driver writes each finished cell (log, then results) atomically, so a killed driver
loses only the cells in flight, and the same command run again does only what is missing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmark.errors import UserError
from benchmark.results.store import (
    parse_cell_file, check_location, check_writable, clean_temporaries, lock_results, move_aside, scan_cells, tidy_logs, write_cell,
    write_log,
)
from benchmark.results.provenance import CODE_VERSION_ENV, code_version
from benchmark.serve.leases import ServerLeases
from benchmark.serve.options import ServerOptions
from benchmark.serve.pool import ServerKey, ServerPool, start_servers, stop_servers
from benchmark.model.weights import WeightsFile
from benchmark.serve.ray_runtime import init_ray
from benchmark.serve.staging import stage
from benchmark.sweep.cell import Cell

RUN_RETRIES = 3  # re-runs of a cell whose process or node died
log = logging.getLogger(__name__)

@dataclass
class SweepSummary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    queries: int = 0
    wall_s: float = 0.0
    failures: list[str] = field(default_factory=list)
    moved_aside: list[str] = field(default_factory=list)  # "path: why" of damaged files whose cells ran again


# ----------------------------------------------------------------------------- one cell, on a worker


def _run_cell_task(cell: Cell, servers: list[Any], eval_test: bool, colocate: bool = False, sink: Any = None) -> dict[str, Any]:
    """Run one cell; return its rows and its log. A Python error is a failed cell, not a lost one.
    ``sink``: the driver's :class:`ProgressSink`, sent each log line as it is written (fire and forget)."""
    from benchmark.sweep.run_cell import failed_row, run_cell

    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}")
        if sink is not None:
            sink.report.remote(cell.cell_id, lines[-1])

    def on_eval(row: dict[str, float]) -> None:
        log("eval " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    log(f"cell {cell.label()} id {cell.cell_id} on {socket.gethostname()} pid {os.getpid()}")
    log(f"hparams {json.dumps(cell.full_hparams(), sort_keys=True)} budget {cell.budget()}")
    start = time.perf_counter()
    try:
        rows = run_cell(cell, servers, eval_test, on_eval=on_eval, colocate=colocate)
        r = rows[0]
        log(f"done in {time.perf_counter() - start:.1f} s: top1_val={r['top1_val']} top1_test={r['top1_test']} "
            f"queries={r['queries']} model_calls={r['model_calls']} gpu_s={r['gpu_s']}")
    except Exception:  # noqa: BLE001 - recorded in the cell's failure row and log
        tb = traceback.format_exc()
        log(f"failed after {time.perf_counter() - start:.1f} s:\n{tb}")
        rows = [failed_row(cell, tb)]
    return {"rows": rows, "log": "\n".join(lines) + "\n"}


class ProgressSink:
    """A small actor beside the driver that cells send their log lines to while they run: the driver
    drains it every couple of seconds, streams each running cell's log to its file and prints a line
    per cell now and then. One message per log line (a cell logs at start, at each evaluation and at
    its end), so it costs next to nothing beside the queries."""

    def __init__(self) -> None:
        self._lines: list[tuple[str, str]] = []

    def report(self, cell_id: str, line: str) -> None:
        self._lines.append((cell_id, line))

    def drain(self) -> list[tuple[str, str]]:
        lines, self._lines = self._lines, []
        return lines


def _start_sink() -> Any:
    """A :class:`ProgressSink` on the driver's node (no CPU reserved); None where it cannot start."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_restarts=0)(ProgressSink).options(scheduling_strategy=here).remote()


# ----------------------------------------------------------------------------- the sweep


def cells_to_run(cells: list[Cell], status: dict[str, str], rerun_failed: bool) -> tuple[list[Cell], int]:
    """The cells still to run and the number skipped (done, or failed unless rerun), from a folder's
    :func:`~benchmark.results.store.scan_cells` status: a damaged file's cell is to run."""
    todo = [c for c in cells if status.get(c.cell_id) != "ok" and (rerun_failed or status.get(c.cell_id) != "failed")]
    return todo, len(cells) - len(todo)


def _damaged_of(todo: list[Cell], damaged: dict[str, str]) -> dict[str, str]:
    """The damaged files (path -> why) that belong to cells about to run (other sweeps' files are left alone)."""
    ids = {c.cell_id for c in todo}
    return {p: why for p, why in damaged.items() if (parse_cell_file(p.rsplit("/", 1)[-1]) or ("",))[0] in ids}


def run_sweep(
    cells: list[Cell],
    out: str,
    server: ServerOptions | None = None,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    rerun_failed: bool = False,
    progress: bool = True,
    eval_test: bool = True,
    cache_dir: str | None = None,
    gpus: int | None = None,
    dashboard: bool = False,
    config: Any = None,
    weights: dict[tuple[str, str], WeightsFile | None] | None = None,
    progress_every: float = 30.0,
    on_cell: Callable[[list[dict[str, Any]]], None] | None = None,
) -> SweepSummary:
    """Run every cell not yet done under ``out`` on servers serving ``server`` (default options);
    write each (log and rows) as it finishes, its rows stamped with the server options and the sweep
    ``config`` (a :class:`~benchmark.sweep.config.SweepConfig`, resolved: :func:`sweep_provenance`). With ``server.colocate``, CraFT and BBT runs execute
    in their model server's process (:mod:`benchmark.serve.colocate`); their run task only waits.

    ``weights``: each (backbone, weights) of the cells resolved to a file on this machine
    (:func:`resolve_weights`; resolved here, before Ray starts, when not given); the servers load
    these files, staged to their nodes through Ray (:mod:`benchmark.serve.staging`).
    ``progress_every``: seconds between two progress lines of one running cell (generation, queries,
    validation accuracy at its last evaluation); its log file is written anew as lines arrive.
    ``on_cell(rows)`` gets each cell's rows once they are stored (experiment tracking, :mod:`benchmark.track`);
    an error there is a warning, the sweep goes on.
    """
    import ray

    summary = SweepSummary()
    start = time.perf_counter()
    check_location(out)
    if weights is None:
        weights = resolve_weights(cells)
    with lock_results(out):  # one driver per results folder: the scan below and the writes are ours
        clean_temporaries(out)  # first, even when nothing is left to run: what dead writers left
        tidy_logs(out)  # logs of the older layout out of Parquet readers' way
        status, damaged = scan_cells(out)
        todo, summary.skipped = cells_to_run(cells, status, rerun_failed)
        damaged = _damaged_of(todo, damaged)
        if not todo:
            summary.wall_s = time.perf_counter() - start
            return summary

        # The commit comes from here, where the checkout's .git is; workers may run from a copy without it.
        os.environ.setdefault(CODE_VERSION_ENV, code_version())
        init_ray(address, num_cpus, dashboard=dashboard)
        _check_gpus(gpus, address)
        server = server or ServerOptions()
        stamp = sweep_provenance(server, config)
        sink = _start_sink()  # its process starts while the servers load their models
        staged = stage({k: v for k, v in weights.items() if k in {(c.backbone, c.weights) for c in todo}})
        servers = start_servers({(c.backbone, c.weights, c.method) for c in todo}, server, gpus=gpus, cache_dir=cache_dir,
                                staged=staged, runs_at_once=len(todo))  # CPU servers: no more than runs to serve
        try:  # nothing is written before the servers are up
            check_writable(out)
            # Kept beside their cells under a name nothing reads; the rerun's result takes their place.
            moved = move_aside(out, list(damaged))
            summary.moved_aside = [f"{old} -> {new} ({damaged[old]})" for old, new in moved.items()]
        except BaseException:
            stop_servers(servers)
            ray.kill(sink)
            raise
        remote_run = ray.remote(num_cpus=1, num_gpus=0, max_retries=RUN_RETRIES, retry_exceptions=False)(_run_cell_task)
        display = Progress(len(todo), progress)
        live = LiveLogs(out, sink, progress_every if progress else None, display)
        leases = ServerLeases({k: len(g) for k, g in servers.groups.items()})
        pending: dict[Any, tuple[Cell, ServerKey, int]] = {}
        queue = list(todo)
        try:
            while queue or pending:
                slots = run_slots() - len(pending)
                queue = _submit(queue, pending, servers, leases, remote_run, eval_test, slots, live.sink)
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=2.0)
                live.update({c.cell_id: c for c, _, _ in pending.values()})
                for ref in ready:
                    cell, key, idx = pending.pop(ref)
                    leases.release(key, idx)
                    live.finished(cell.cell_id)
                    rows, log_text = _collect(ref, cell)
                    rows = [{**r, **stamp} for r in rows]
                    write_log(out, cell.method, cell.dataset, cell.cell_id, log_text)
                    write_cell(out, rows)
                    if on_cell is not None:
                        _tell(on_cell, rows, cell)
                    ok = rows[0]["status"] == "ok"
                    if ok:
                        summary.done += 1
                        summary.queries += int(rows[0]["queries"] or 0)
                    else:
                        summary.failed += 1
                        summary.failures.append(f"{cell.label()}: {rows[0]['error'].strip().splitlines()[-1]}")
                    display.finished(cell, ok, summary, len(pending), time.perf_counter() - start)
                display.tick(summary, len(pending), time.perf_counter() - start)
        finally:
            display.close()
            live.close()
            stop_servers(servers)
        summary.wall_s = time.perf_counter() - start
        return summary


def resolve_weights(cells: list[Cell], location: str | None = None) -> dict[tuple[str, str], WeightsFile | None]:
    """Each (backbone, weights) of ``cells`` as a file on this machine, the driver
    (:func:`benchmark.model.weights.resolve`; ``location``: the config's ``weights:``); UserError before
    Ray starts when one is missing."""
    from benchmark.model.weights import resolve

    return {key: resolve(*key, location=location) for key in dict.fromkeys((c.backbone, c.weights) for c in cells)}


def _tell(on_cell: Callable[[list[dict[str, Any]]], None], rows: list[dict[str, Any]], cell: Cell) -> None:
    """Hand a stored cell's rows to ``on_cell``; its failure is a warning (the rows are stored: craft export logs them later)."""
    try:
        on_cell(rows)
    except Exception as exc:  # noqa: BLE001 - a tracking server down must not stop a sweep
        log.warning("warning: cell %s stored but not tracked: %s: %s (craft export logs a folder later)",
                    cell.label(), type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")


def sweep_provenance(server: ServerOptions, config: Any = None) -> dict[str, Any]:
    """The columns every row of a sweep shares: its server options, and its resolved config as JSON with
    the hash of that config (its file's path left out of the hash, so that a moved file hashes the same)."""
    compile_ = str(server.compile).lower() if isinstance(server.compile, bool) else server.compile
    record: dict[str, Any] = {"precision": server.precision, "compile": compile_, "attention": server.attention,
                              "colocate": server.colocate}
    if config is not None:
        resolved = dataclasses.asdict(config)
        text = json.dumps({k: v for k, v in resolved.items() if k != "path"}, default=str, sort_keys=True)
        record |= {"config": json.dumps(resolved, default=str, sort_keys=True),
                   "config_hash": hashlib.sha256(text.encode()).hexdigest()[:16]}
    return record


def _check_gpus(gpus: int | None, address: str | None) -> None:
    """UserError when a local runtime is asked for more GPUs than this machine has (a cluster may add them)."""
    import ray

    if gpus and not (address or os.environ.get("RAY_ADDRESS")):
        have = int(ray.cluster_resources().get("GPU", 0))
        if gpus > have:
            raise UserError(f"--gpus {gpus}: this machine has {have} GPU(s) for Ray (an autoscaling cluster could add more)")


def run_slots() -> int:
    """How many runs may be in flight: the cluster's CPUs (now: an autoscaling cluster grows).

    A run reserves one CPU, but Ray lends a task's CPU to other tasks while it blocks in
    ``ray.get``, which a run does at every query, so Ray alone would start every queued run
    at once. More runs than CPUs only time-slice them (docs/measurements/throughput_log.md).
    """
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _submit(queue, pending, servers: ServerPool, leases: ServerLeases, remote_run, eval_test, slots: int,
            sink: Any = None) -> list[Cell]:
    """Start queued cells on the least-loaded of their servers while one has room (at most ``slots``)."""
    left = []
    for cell in queue:
        if slots <= 0:
            left.append(cell)
            continue
        key = servers.key(cell.backbone, cell.weights, cell.method)
        idx = leases.acquire(key, cap=servers.options.runs_per_server)
        if idx is None:
            left.append(cell)
            continue
        group = servers.groups[key]
        ordered = group[idx:] + group[:idx]  # its chosen server first, the others to fail over to
        pending[remote_run.remote(cell, ordered, eval_test, servers.options.colocate, sink)] = (cell, key, idx)
        slots -= 1
    return left


def _collect(ref: Any, cell: Cell) -> tuple[list[dict[str, Any]], str]:
    """A finished task's rows and log; a task that died more often than retried is a failed cell."""
    import ray

    from benchmark.sweep.run_cell import failed_row

    try:
        result = ray.get(ref)
        return result["rows"], result["log"]
    except Exception as exc:  # noqa: BLE001 - worker or node lost RUN_RETRIES + 1 times
        error = f"{type(exc).__name__}: {exc}"
        text = f"{time.strftime('%Y-%m-%d %H:%M:%S')} cell {cell.label()} id {cell.cell_id} lost after {RUN_RETRIES} retries:\n{error}\n"
        return [failed_row(cell, error)], text


class LiveLogs:
    """The driver's side of :class:`ProgressSink`: each running cell's log lines so far, written to its
    log file as they come, and one progress line per cell at most every ``every`` seconds (None: none)."""

    DRAIN_S = 2.0

    def __init__(self, out: str, sink: Any, every: float | None, display: "Progress") -> None:
        self.out, self.sink, self.every, self.display = out, sink, every, display
        self.lines: dict[str, list[str]] = {}
        self.printed: dict[str, float] = {}
        self._drained = 0.0
        self._pending: Any = None  # the drain call in flight

    def update(self, running: dict[str, Cell]) -> None:
        """Drain the sink (every couple of seconds): stream logs, print a line per cell that moved."""
        import ray

        now = time.monotonic()
        if self.sink is None or now - self._drained < self.DRAIN_S:
            return
        self._drained = now
        if self._pending is None:  # never wait on it: the sink may still be starting
            self._pending = self.sink.drain.remote()
            return
        if not ray.wait([self._pending], timeout=0)[0]:
            return
        try:
            got = ray.get(self._pending)
        except Exception:  # noqa: BLE001 - progress is a convenience: a lost sink costs only the lines
            self.sink = None
            return
        self._pending = self.sink.drain.remote()
        moved: set[str] = set()
        evals: dict[str, str] = {}  # the last evaluation line of each cell: generation, queries, accuracy
        for cell_id, line in got:
            if cell_id in running:
                self.lines.setdefault(cell_id, []).append(line)
                moved.add(cell_id)
                text = line.split(" ", 2)[-1]
                if text.startswith("eval "):
                    evals[cell_id] = text[len("eval "):]
        for cell_id in moved:
            cell = running[cell_id]
            write_log(self.out, cell.method, cell.dataset, cell_id, "\n".join(self.lines[cell_id]) + "\n")
        for cell_id, text in evals.items():
            if self.every is not None and now - self.printed.get(cell_id, -1e9) >= self.every:
                self.printed[cell_id] = now
                self.display.note(f"running {running[cell_id].label()}: {text}")

    def finished(self, cell_id: str) -> None:
        self.lines.pop(cell_id, None)
        self.printed.pop(cell_id, None)

    def close(self) -> None:
        if self.sink is not None:
            import ray

            ray.kill(self.sink)


class Progress:
    """Cells done, running and failed, queries per second and an ETA: a bar on a terminal, lines in a log."""

    def __init__(self, total: int, enabled: bool) -> None:
        enabled = enabled and log.isEnabledFor(logging.INFO)  # -q: no bar, no lines
        self.total, self.enabled = total, enabled
        self.bar = None
        self._last_line = 0.0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="cell", desc="cells", dynamic_ncols=True)

    def _status(self, s: SweepSummary, running: int, elapsed: float) -> str:
        finished = s.done + s.failed
        eta = (self.total - finished) * elapsed / finished if finished else float("nan")
        eta_text = "?" if eta != eta else f"{int(eta // 60)}m{int(eta % 60):02d}s"
        return f"{finished}/{self.total} done ({s.failed} failed), {running} running, {s.queries / max(elapsed, 1e-9):.0f} queries/s, ETA {eta_text}"

    def finished(self, cell: Cell, ok: bool, s: SweepSummary, running: int, elapsed: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(running=running, failed=s.failed, qps=f"{s.queries / max(elapsed, 1e-9):.0f}")
        else:
            log.info("%s %s; %s", "ok" if ok else "FAILED", cell.label(), self._status(s, running, elapsed))

    def note(self, line: str) -> None:
        """A line about a running cell: above the bar on a terminal, else on stderr."""
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            log.info("%s", line)

    def tick(self, s: SweepSummary, running: int, elapsed: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(running=running, failed=s.failed, qps=f"{s.queries / max(elapsed, 1e-9):.0f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
