"""Writing and finding result files: one Parquet file per cell, never half-written or doubled.

A cell's rows go to ``<out>/<method>/<dataset>/<cell_id>.parquet`` (``<cell_id>.failed.parquet``
for a failed cell) and its log to ``<cell_id>.log`` beside it. Each file is written under a
temporary name in the same folder and then renamed, so a reader (or a rerun after a killed
driver) sees a whole file or none. A temporary name says who writes it
(``.tmp-<pid>@<host>@<random>``), so that cleaning up removes only what a dead writer left.
``out`` is a local path or any pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://...``).
Nothing here unpickles: results are Parquet, logs are text.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from benchmark.errors import UserError
from benchmark.results_schema import to_table

OK_SUFFIX = ".parquet"
FAILED_SUFFIX = ".failed.parquet"
LOG_SUFFIX = ".log"
TMP_PREFIX = ".tmp-"
# A temporary of a writer on another host is taken as abandoned after this long.
FOREIGN_TMP_MAX_AGE_S = 3600.0


def resolve(out: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a results location (local path or URI); UserError if unusable."""
    if "://" in out:
        try:
            return pafs.FileSystem.from_uri(out)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise UserError(f"cannot use results location {out}: {exc}") from None
    return pafs.LocalFileSystem(), os.path.abspath(out)


def check_location(out: str) -> None:
    """Check ``out`` without creating anything: a URI must parse; a local path must lie under a writable folder."""
    fs, base = resolve(out)
    if not isinstance(fs, pafs.LocalFileSystem):
        return
    path = base
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise UserError(f"cannot write results to {out}: {path} is a file, not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write results to {out}: folder {path} is not writable")


def check_writable(out: str) -> None:
    """Create ``out`` and write and remove a probe file there; UserError naming ``out`` otherwise."""
    fs, base = resolve(out)
    probe = f"{base}/{_tmp_name('probe')}"
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(probe) as stream:
            stream.write(b"ok")
        fs.delete_file(probe)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"cannot write results to {out}: {exc}") from None


def cell_path(base: str, method: str, dataset: str, cell_id: str, failed: bool = False) -> str:
    return f"{base}/{method}/{dataset}/{cell_id}{FAILED_SUFFIX if failed else OK_SUFFIX}"


def log_path(out: str, method: str, dataset: str, cell_id: str) -> str:
    """Where a cell's log goes (beside its results)."""
    _, base = resolve(out)
    return f"{base}/{method}/{dataset}/{cell_id}{LOG_SUFFIX}"


def _tmp_name(suffix: str) -> str:
    return f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}@{uuid.uuid4().hex}.{suffix}"


def _write_atomic(fs: pafs.FileSystem, path: str, write: Any) -> None:
    """Write through ``write(stream)`` to a temporary beside ``path``, then rename it to ``path``."""
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/{_tmp_name(path.rsplit('.', 1)[-1])}"
    try:
        with fs.open_output_stream(tmp) as stream:
            write(stream)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise


def write_cell(out: str, rows: list[dict[str, Any]]) -> str:
    """Write one cell's rows atomically; a success removes an earlier failure record of the cell."""
    fs, base = resolve(out)
    first = rows[0]
    failed = first["status"] != "ok"
    path = cell_path(base, first["method"], first["dataset"], first["cell_id"], failed)
    table = to_table(rows)  # schema errors surface before anything is written
    _write_atomic(fs, path, lambda stream: pq.write_table(table, stream))
    if not failed:
        stale = cell_path(base, first["method"], first["dataset"], first["cell_id"], failed=True)
        if fs.get_file_info(stale).type == pafs.FileType.File:
            fs.delete_file(stale)
    return path


def write_log(out: str, method: str, dataset: str, cell_id: str, text: str) -> str:
    """Write a cell's log atomically beside its results (replacing an earlier attempt's)."""
    fs, _ = resolve(out)
    path = log_path(out, method, dataset, cell_id)
    _write_atomic(fs, path, lambda stream: stream.write(text.encode("utf-8")))
    return path


def _files(out: str) -> list[pafs.FileInfo]:
    fs, base = resolve(out)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return []
    return [f for f in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if f.type == pafs.FileType.File]


def cell_status(out: str) -> dict[str, str]:
    """``cell_id -> 'ok' | 'failed'`` for every finished cell under ``out`` (ok wins)."""
    status: dict[str, str] = {}
    for f in _files(out):
        name = f.base_name
        if name.startswith(TMP_PREFIX):
            continue
        if name.endswith(FAILED_SUFFIX):
            status.setdefault(name[: -len(FAILED_SUFFIX)], "failed")
        elif name.endswith(OK_SUFFIX):
            status[name[: -len(OK_SUFFIX)]] = "ok"
    return status


def stray_temporaries(out: str) -> list[str]:
    """Temporary files under ``out``, whoever writes them."""
    return [f.path for f in _files(out) if f.base_name.startswith(TMP_PREFIX)]


def _writer_dead(info: pafs.FileInfo, now: float) -> bool:
    """Whether the writer named in a temporary's name can no longer finish it."""
    try:
        pid_text, host, _ = info.base_name[len(TMP_PREFIX) :].split("@", 2)
        pid = int(pid_text)
    except ValueError:
        return True  # not one of ours (an older naming): nobody will finish it
    if host == socket.gethostname():
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    mtime = info.mtime.timestamp() if info.mtime is not None else now
    return now - mtime > FOREIGN_TMP_MAX_AGE_S


def clean_temporaries(out: str) -> int:
    """Remove temporaries whose writer is dead, and failure records that a success superseded.

    A temporary of a live writer (this host) or a recent one (another host) is left alone, so
    two drivers on one results folder do not delete each other's files mid-write.
    """
    fs, _ = resolve(out)
    files = _files(out)
    now = time.time()
    removed = 0
    ok = {f.path[: -len(OK_SUFFIX)] for f in files if f.base_name.endswith(OK_SUFFIX)
          and not f.base_name.endswith(FAILED_SUFFIX) and not f.base_name.startswith(TMP_PREFIX)}
    for f in files:
        stale_failure = f.base_name.endswith(FAILED_SUFFIX) and f.path[: -len(FAILED_SUFFIX)] in ok
        dead_tmp = f.base_name.startswith(TMP_PREFIX) and _writer_dead(f, now)
        if stale_failure or dead_tmp:
            try:
                fs.delete_file(f.path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed
