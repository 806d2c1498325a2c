"""The one atomic write (benchmark.files): a whole file or the old one, and no temporary left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmark.files import TMP_PREFIX, TMP_SUFFIX, tmp_name, write_atomic


def test_write_atomic_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "new" / "a.txt"  # its folder is created
    write_atomic(target, lambda f: f.write(b"one"))
    write_atomic(str(target), lambda f: f.write(b"two"))
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")

    def fail(f) -> None:
        f.write(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        write_atomic(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temporaries_are_dot_files_that_name_their_writer() -> None:
    name = tmp_name()
    assert name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX) and name != tmp_name()


def test_safetensors_through_a_stream_are_the_bytes_save_file_writes(tmp_path: Path) -> None:
    from safetensors.torch import save, save_file

    tensors = {"features": torch.randn(5, 3)}
    save_file(tensors, str(tmp_path / "direct.safetensors"), metadata={"key": "k"})
    write_atomic(tmp_path / "streamed.safetensors", lambda f: f.write(save(tensors, metadata={"key": "k"})))
    assert (tmp_path / "direct.safetensors").read_bytes() == (tmp_path / "streamed.safetensors").read_bytes()
