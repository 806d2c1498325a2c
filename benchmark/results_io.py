"""Writing and finding result files: one Parquet file per cell, never half-written or doubled.

A cell's rows go to ``<out>/<method>/<dataset>/<cell_id>.parquet`` (``<cell_id>.failed.parquet``
for a failed cell). Each file is written under a temporary name in the same folder and then
renamed, so a reader (or a rerun after a killed driver) sees a whole file or none. ``out`` is
a local path or any pyarrow filesystem URI (``s3://bucket/prefix``, ``gs://...``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from benchmark.results_schema import to_table

OK_SUFFIX = ".parquet"
FAILED_SUFFIX = ".failed.parquet"
TMP_PREFIX = ".tmp-"


def resolve(out: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a results location (local path or URI)."""
    if "://" in out:
        return pafs.FileSystem.from_uri(out)
    import os

    return pafs.LocalFileSystem(), os.path.abspath(out)


def cell_path(base: str, method: str, dataset: str, cell_id: str, failed: bool = False) -> str:
    return f"{base}/{method}/{dataset}/{cell_id}{FAILED_SUFFIX if failed else OK_SUFFIX}"


def write_cell(out: str, rows: list[dict[str, Any]]) -> str:
    """Write one cell's rows atomically; a success removes an earlier failure record of the cell."""
    fs, base = resolve(out)
    first = rows[0]
    failed = first["status"] != "ok"
    path = cell_path(base, first["method"], first["dataset"], first["cell_id"], failed)
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/{TMP_PREFIX}{uuid.uuid4().hex}{OK_SUFFIX}"
    try:
        with fs.open_output_stream(tmp) as stream:
            pq.write_table(to_table(rows), stream)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass
        raise
    if not failed:
        stale = cell_path(base, first["method"], first["dataset"], first["cell_id"], failed=True)
        if fs.get_file_info(stale).type == pafs.FileType.File:
            fs.delete_file(stale)
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
    """Temporary files left by a writer that was killed mid-write."""
    return [f.path for f in _files(out) if f.base_name.startswith(TMP_PREFIX)]


def clean_temporaries(out: str) -> int:
    """Remove temporaries of killed writers (safe: no finished file is ever a temporary)."""
    fs, _ = resolve(out)
    paths = stray_temporaries(out)
    for p in paths:
        fs.delete_file(p)
    return len(paths)
