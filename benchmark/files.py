"""Writing a file whole or not at all: the one atomic write of results, feature cache and search export;
and the one digest of a file's bytes.

The bytes go to a temporary file beside the target, which is then renamed onto it, so a reader
(or a run after a killed writer) sees the old file, the new one or none, never half of one. A
temporary's name says who writes it (``.tmp-<pid>@<host>@<random>.tmp``): a dot-file that no
reader lists, which a clean-up can match to a dead writer. Any pyarrow filesystem works (a local
folder, ``s3://...``); torch-free, and pyarrow is imported on the first write.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.errors import UserError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".tmp"


def tmp_name() -> str:
    """A fresh temporary file name that names this process and host."""
    return f"{TMP_PREFIX}{os.getpid()}@{socket.gethostname()}@{uuid.uuid4().hex}{TMP_SUFFIX}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of the file's bytes (hex), read 1 MiB at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str | Path, write: Callable[[Any], object], fs: pafs.FileSystem | None = None) -> None:
    """Write through ``write(stream)`` (a binary output stream) to a temporary beside ``path``, then rename
    it to ``path``. ``fs``: the pyarrow filesystem ``path`` lies on (None: the local one). The folder is
    created if missing; on any error the temporary is removed and the error raised."""
    if fs is None:
        import pyarrow.fs as pafs

        fs, path = pafs.LocalFileSystem(), os.path.abspath(path)
    path = str(path)
    folder = path.rsplit("/", 1)[0]
    fs.create_dir(folder, recursive=True)
    tmp = f"{folder}/{tmp_name()}"
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


def check_output_file(path: Path, example: str) -> None:
    """UserError unless ``path`` (an ``--out FILE``) can be a file: not a folder, nor under a file;
    ``example`` names a file to suggest. Called before any work, so nothing is lost to a bad path."""
    if path.is_dir():
        raise UserError(f"--out {path} is a folder; give a file path, e.g. {path / example}")
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise UserError(f"--out {path} lies under {above}, a file; give a file path in a folder")
