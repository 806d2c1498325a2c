"""Writing and finding result files: one Parquet file per cell, never half-written or doubled.

A cell's rows go to ``<out>/<method>/<dataset>/<cell_id>.parquet`` (``<cell_id>.failed.parquet``
for a failed cell) and its log to ``<out>/_logs/<method>/<dataset>/<cell_id>.log``: under a ``_``
folder, which pyarrow's dataset reader (so ``pd.read_parquet(out)``) skips, as it skips the
dot-named temporaries, lock and moved-aside files, so that every Parquet reader opens ``out`` as it
is. Folders written before kept each log beside its results; they still read, resume and verify
(nothing here reads a log), and :func:`tidy_logs` (run by ``craft bench`` and ``craft results
--tidy``) moves such logs under ``_logs/``. Each file is written under a
temporary name in the same folder and then renamed, so a reader (or a rerun after a killed
driver) sees a whole file or none (:mod:`benchmark.files`). A temporary name says who writes it
(``.tmp-<pid>@<host>@<random>.tmp``), so that cleaning up removes only what a dead writer left.
``out`` is a local path or any pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://...``).
Nothing here unpickles: results are Parquet, logs are text.

A done cell is a file that reads back whole (:func:`verify_file`: footer, row count, page
checksums written with it, and rows naming the cell); a damaged one counts as not there, and
the sweep that runs it again first moves the damaged file aside (``.<name>.damaged-<time>``),
so that nothing already written is lost.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from benchmark.errors import UserError
from benchmark.files import TMP_PREFIX, tmp_name, write_atomic
from benchmark.locks import hold
from benchmark.results.schema import to_table

OK_SUFFIX = ".parquet"
FAILED_SUFFIX = ".failed.parquet"
LOG_SUFFIX = ".log"
LOGS_DIR = "_logs"  # a reader-skipped folder (pyarrow ignores names starting with "_" or ".")
DAMAGED_MARK = ".damaged-"  # a damaged result file moved aside: .<name>.damaged-<UTC time>
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


LOCK_NAME = ".craft-lock"


@contextmanager
def lock_results(out: str) -> Iterator[None]:
    """Hold the results folder ``out`` for this process (:func:`benchmark.locks.hold`), or UserError naming its holder.

    A local folder only: a URI (``s3://...``) has no lock, so give each driver its own prefix there.
    Folders created for the lock are removed again if the block leaves them empty.
    """
    fs, base = resolve(out)
    if not isinstance(fs, pafs.LocalFileSystem):
        yield
        return
    created = []
    p = base
    while not os.path.isdir(p):
        created.append(p)
        p = os.path.dirname(p)
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write results to {out}: {exc.strerror or exc}") from None
    try:
        with hold(f"{base}/{LOCK_NAME}", f"results folder {out}"):
            yield
    finally:
        for folder in created:  # deepest first; stops at the first that holds something
            try:
                os.rmdir(folder)
            except OSError:
                break


def check_writable(out: str) -> None:
    """Create ``out`` and write and remove a probe file there; UserError naming ``out`` otherwise."""
    fs, base = resolve(out)
    probe = f"{base}/{tmp_name()}"
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
    """Where a cell's log goes: ``<out>/_logs/<method>/<dataset>/<cell_id>.log``, out of Parquet readers' way."""
    _, base = resolve(out)
    return f"{base}/{LOGS_DIR}/{method}/{dataset}/{cell_id}{LOG_SUFFIX}"


def tidy_logs(out: str) -> dict[str, str]:
    """Move logs of the older layout (``<cell_id>.log`` beside the results) to :func:`log_path`, so that
    pyarrow and pandas open the folder; a log already there is kept (the older one then keeps its place).
    Returns ``{old path: new path}`` of the logs moved."""
    fs, base = resolve(out)
    moved = {}
    for f in list_files(out):
        rel = f.path[len(base) + 1:].split("/")
        if not f.base_name.endswith(LOG_SUFFIX) or rel[0] == LOGS_DIR or f.base_name.startswith(TMP_PREFIX):
            continue
        target = f"{base}/{LOGS_DIR}/{'/'.join(rel)}"
        if fs.get_file_info(target).type != pafs.FileType.NotFound:
            continue
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        try:
            fs.move(f.path, target)
        except FileNotFoundError:
            continue
        moved[f.path] = target
    return moved


def _write_atomic(fs: pafs.FileSystem, path: str, write: Any) -> None:
    """:func:`benchmark.files.write_atomic`, a full disk said as a UserError."""
    try:
        write_atomic(path, write, fs)
    except BaseException as exc:
        if disk_full(exc):
            raise UserError(f"no space left on the device to write {path} (nothing partial was left, and every "
                            "file written before is whole): free space and run the same command again") from None
        raise


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full (ENOSPC from Python, or pyarrow's IOError saying so)."""
    return isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc))


def write_cell(out: str, rows: list[dict[str, Any]]) -> str:
    """Write one cell's rows atomically; a success removes an earlier failure record of the cell."""
    fs, base = resolve(out)
    first = rows[0]
    failed = first["status"] != "ok"
    path = cell_path(base, first["method"], first["dataset"], first["cell_id"], failed)
    table = to_table(rows)  # schema errors surface before anything is written
    _write_atomic(fs, path, lambda stream: pq.write_table(table, stream, write_page_checksum=True))
    if not failed:
        stale = cell_path(base, first["method"], first["dataset"], first["cell_id"], failed=True)
        if fs.get_file_info(stale).type == pafs.FileType.File:
            fs.delete_file(stale)
    return path


def write_log(out: str, method: str, dataset: str, cell_id: str, text: str) -> str:
    """Write a cell's log atomically to :func:`log_path` (replacing an earlier attempt's)."""
    fs, _ = resolve(out)
    path = log_path(out, method, dataset, cell_id)
    _write_atomic(fs, path, lambda stream: stream.write(text.encode("utf-8")))
    return path


def list_files(out: str) -> list[pafs.FileInfo]:
    """Every file under the results location ``out`` (recursive; none if it is not a folder); UserError if unreadable."""
    fs, base = resolve(out)
    try:
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            return []
        return [f for f in fs.get_file_info(pafs.FileSelector(base, recursive=True)) if f.type == pafs.FileType.File]
    except OSError as exc:  # a name too long, a folder without read permission, a store that refuses
        why = os.strerror(exc.errno) if exc.errno else " ".join(str(exc).split())[:200]
        raise UserError(f"cannot read results location {out}: {why}") from None


def parse_cell_file(name: str) -> tuple[str, str] | None:
    """``(cell_id, 'ok' | 'failed')`` for a result file's name, None for any other file."""
    if name.startswith(TMP_PREFIX):
        return None
    if name.endswith(FAILED_SUFFIX):
        return name[: -len(FAILED_SUFFIX)], "failed"
    if name.endswith(OK_SUFFIX):
        return name[: -len(OK_SUFFIX)], "ok"
    return None


def verify_file(fs: pafs.FileSystem, path: str, *, named: bool = False) -> str | None:
    """Why the result file at ``path`` cannot count as its cell's record, or None if it reads whole.

    Checked: the footer parses and declares rows; every page reads back (with the page checksums
    that :func:`write_cell` records); the columns ``cell_id`` and ``status`` exist; with ``named``
    (a file under a results folder), every row names the file's cell with the status its name says.
    Result files are a few kB: checking one costs milliseconds.
    """
    name = path.rsplit("/", 1)[-1]
    kind = parse_cell_file(name) if named else None
    try:
        if fs.get_file_info(path).size == 0:
            return "empty file (0 bytes)"
        with fs.open_input_file(path) as f:
            reader = pq.ParquetFile(f, page_checksum_verification=True)
            if reader.metadata.num_rows < 1:
                return "no rows"
            missing = {"cell_id", "status"} - set(reader.schema_arrow.names)
            if missing:
                return f"no column(s) {', '.join(sorted(missing))}"
            table = reader.read(columns=None)
    except Exception as exc:  # noqa: BLE001 - damaged bytes raise anything (ArrowInvalid, OSError, UnicodeDecodeError)
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if kind is not None:
        cell_id, status = kind
        if set(table.column("cell_id").to_pylist()) != {cell_id}:
            return f"rows name another cell than {cell_id}"
        statuses = set(table.column("status").to_pylist())
        if (status == "ok") != (statuses == {"ok"}):
            return f"rows have status {', '.join(sorted(map(str, statuses)))}, the file name says {status}"
    return None


def scan_cells(out: str) -> tuple[dict[str, str], dict[str, str]]:
    """Every finished cell under ``out`` and every damaged result file.

    Returns ``(status, damaged)``: ``cell_id -> 'ok' | 'failed'`` for files that verify (ok wins),
    and ``path -> why`` for result files that do not (:func:`verify_file`); a damaged file's cell
    is not done.
    """
    fs, _ = resolve(out)
    status: dict[str, str] = {}
    damaged: dict[str, str] = {}
    for f in list_files(out):
        kind = parse_cell_file(f.base_name)
        if kind is None:
            continue
        why = verify_file(fs, f.path, named=True)
        if why is not None:
            damaged[f.path] = why
        elif kind[1] == "ok":
            status[kind[0]] = "ok"
        else:
            status.setdefault(kind[0], "failed")
    return status, damaged


def cell_status(out: str) -> dict[str, str]:
    """``cell_id -> 'ok' | 'failed'`` for every finished cell under ``out`` whose file verifies (ok wins)."""
    return scan_cells(out)[0]


def move_aside(out: str, paths: list[str]) -> dict[str, str]:
    """Rename each damaged result file to ``.<name>.damaged-<UTC time>`` beside it: kept, and hidden from
    every reader (pyarrow and pandas skip dot-files; the name no longer ends in ``.parquet``).
    Returns ``{path: new path}`` for the files moved."""
    fs, _ = resolve(out)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = {}
    for path in paths:
        folder, name = path.rsplit("/", 1)
        target = f"{folder}/.{name}{DAMAGED_MARK}{stamp}"
        try:
            fs.move(path, target)
        except FileNotFoundError:
            continue  # another writer replaced or moved it meanwhile
        moved[path] = target
    return moved


def stray_temporaries(out: str) -> list[str]:
    """Temporary files under ``out``, whoever writes them."""
    return [f.path for f in list_files(out) if f.base_name.startswith(TMP_PREFIX)]


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
    files = list_files(out)
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
