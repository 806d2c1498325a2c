"""Read results: every ``*.parquet`` under a folder (or one file), local or on any pyarrow filesystem."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from benchmark.errors import UserError
from benchmark.results.store import verify_file
from benchmark.results.schema import SCHEMA

log = logging.getLogger(__name__)


def warn_damaged(path: str, why: str) -> None:
    """Say on stderr that a damaged result file is left out (the default of :func:`load_results`)."""
    log.warning("warning: skipped damaged result file %s: %s (craft bench runs its cell again)", path, why)


def load_results(
    path: str | os.PathLike[str], *, ok_only: bool = True, on_damaged: Callable[[str, str], None] = warn_damaged
) -> pd.DataFrame:
    """The result rows under ``path`` (a folder, a file, or a URI such as ``s3://bucket/results``).

    Files are read with :data:`~benchmark.results.schema.SCHEMA` (columns a file lacks are null);
    ``ok_only`` keeps the rows whose status is ``ok``. A file that does not verify
    (:func:`benchmark.results.store.verify_file`) is left out and named to ``on_damaged(path, why)``,
    so that one damaged cell does not hide the others.
    """
    fs, files = _parquet_files(str(path))
    if not files:
        raise UserError(f"no Parquet files under {path}")
    good, damaged = [], []
    for f in files:
        why = verify_file(fs, f)
        if why is None:
            good.append(f)
        else:
            damaged.append((f, why))
    if not good:  # one sentence, not a warning per file and then the error
        first, why = damaged[0]
        more = f"; craft results {path} names the other {len(damaged) - 1}" if len(damaged) > 1 else ""
        raise UserError(f"no readable Parquet files under {path}: all {len(files)} are damaged, e.g. {first}: {why}{more}")
    for f, why in damaged:
        on_damaged(f, why)
    files = good
    try:
        table = ds.dataset(files, schema=SCHEMA, format="parquet", filesystem=fs).to_table()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UserError(f"cannot read the results under {path} with the results schema: {exc}") from None
    df = table.to_pandas()
    if ok_only:
        df = df[df["status"] == "ok"].reset_index(drop=True)
    return df


def _parquet_files(path: str) -> tuple[pafs.FileSystem, list[str]]:
    """The filesystem and the sorted ``*.parquet`` files at or under ``path`` (hidden and ``_`` names skipped)."""
    if "://" in path:
        try:
            fs, root = pafs.FileSystem.from_uri(path)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise UserError(f"cannot open {path}: {exc}") from None
    else:
        fs, root = pafs.LocalFileSystem(), os.path.abspath(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"no such file or folder: {path}")
    infos = [info] if info.type == pafs.FileType.File else fs.get_file_info(pafs.FileSelector(root, recursive=True))
    files = [
        i.path
        for i in infos
        if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not i.base_name.startswith((".", "_"))
    ]
    return fs, sorted(files)
