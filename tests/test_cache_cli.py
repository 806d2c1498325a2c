"""``craft cache list|verify|clear`` through the ``craft`` entry point."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark.cli import SUBCOMMANDS, main
from benchmark.model.feature_keys import KEY_VERSION
from benchmark.model.feature_cache import FeatureCache

DAY = 86400


def fields(dataset: str, split: str, n: int = 3) -> dict:
    return {"backbone": "craft-tiny", "weights": "w", "dataset": dataset, "precision": "fp32", "split": split,
            "aug": "test", "shots": 16, "seed": 1, "root": f"/data/{dataset}", "n": n, "key_version": KEY_VERSION}


def fill(root: Path) -> FeatureCache:
    """Four entries, two per dataset; the dtd ones last written 10 days ago."""
    cache = FeatureCache(root)
    for ds in ("dtd", "eurosat"):
        for split in ("train", "test"):
            f = fields(ds, split)
            cache.get_or_compute(f, lambda: torch.ones(3, 4))
            if ds == "dtd":
                old = time.time() - 10 * DAY
                for p in (cache.path(f), cache.path(f).with_suffix(".json")):
                    os.utime(p, (old, old))
    return cache


def craft(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(["cache", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_each_entry_with_its_fields_size_and_age(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fill(tmp_path)
    code, out, _ = craft(capsys, "list", "--dir", str(tmp_path))
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["key", "dataset", "split"]
    assert sorted(line.split()[1] for line in lines[1:5]) == ["dtd", "dtd", "eurosat", "eurosat"]
    assert [" MB  10d " in line for line in lines[1:5]] == [False, False, True, True]  # newest first
    assert all("/data/" in line and "16/1" in line for line in lines[1:5])
    assert lines[-1].startswith("4 entries, ") and lines[-1].endswith(f" in {tmp_path}")


def test_verify_finds_broken_entries_and_fix_removes_only_them(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = fill(tmp_path)
    assert craft(capsys, "verify", "--dir", str(tmp_path))[:2] == (0, "4 entries checked, 0 broken\n")
    truncated = cache.path(fields("dtd", "train"))
    truncated.write_bytes(truncated.read_bytes()[:40])
    wrong_n = fields("eurosat", "val", n=5)  # recorded 5 images, holds 3 rows
    cache.get_or_compute(wrong_n, lambda: torch.ones(3, 4))
    lone = tmp_path / ("0" * 64 + ".json")
    lone.write_text("{}")
    stray = tmp_path / ".x.safetensors.abc.tmp"  # a writer that died an hour ago
    stray.write_bytes(b"half")
    os.utime(stray, (time.time() - 3600,) * 2)
    fresh = tmp_path / ".y.safetensors.def.tmp"  # a writer at work now: not touched
    fresh.write_bytes(b"half")

    code, out, _ = craft(capsys, "verify", "--dir", str(tmp_path))
    assert code == 1 and out.endswith("7 entries checked, 4 broken; --fix removes them\n")
    assert f"broken: {truncated.name}, {truncated.with_suffix('.json').name}: features file cannot be read" in out
    assert "features have shape (3, 4), expected 5 rows" in out
    assert f"broken: {lone.name}: sidecar without its features file" in out
    assert f"broken: {stray.name}: temporary file left by a writer" in out

    code, out, _ = craft(capsys, "verify", "--dir", str(tmp_path), "--fix")
    assert code == 0 and out.endswith("7 entries checked, 4 removed\n")
    assert not truncated.exists() and not lone.exists() and not stray.exists() and fresh.exists()
    assert cache.get(fields("dtd", "test")) is not None and cache.get(wrong_n) is None
    assert craft(capsys, "verify", "--dir", str(tmp_path))[:2] == (0, "3 entries checked, 0 broken\n")


def test_verify_flags_a_sidecar_that_does_not_belong_to_its_tensor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = fill(tmp_path)
    sidecar = cache.path(fields("eurosat", "test")).with_suffix(".json")
    sidecar.write_text(cache.path(fields("eurosat", "train")).with_suffix(".json").read_text())
    code, out, _ = craft(capsys, "verify", "--dir", str(tmp_path))
    assert code == 1 and "sidecar's fields do not hash to the file name" in out


def test_clear_by_dataset_by_age_and_all(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cache = fill(tmp_path)
    code, out, _ = craft(capsys, "clear", "--dir", str(tmp_path), "--dataset", "eurosat", "--older-than", "1")
    assert (code, out.split(" from ")[0]) == (0, "removed 0 of 4 entries (0.0 MB)")  # eurosat's are new
    code, out, _ = craft(capsys, "clear", "--dir", str(tmp_path), "--older-than", "7")
    assert code == 0 and out.startswith("removed 2 of 4 entries")
    assert cache.get(fields("dtd", "train")) is None and cache.get(fields("eurosat", "train")) is not None
    fill(tmp_path)
    code, out, _ = craft(capsys, "clear", "--dir", str(tmp_path), "--dataset", "dtd")
    assert out.startswith("removed 2 of 4 entries") and cache.get(fields("eurosat", "test")) is not None
    old = {k: v for k, v in fields("dtd", "test").items() if k != "key_version"}  # keyed before key_version 2
    cache.get_or_compute(old, lambda: torch.ones(3, 4))
    assert craft(capsys, "list", "--dir", str(tmp_path))[1].splitlines()[-1].endswith(
        "; 1 made under an earlier key format, never read again (clear --old-keys removes them)")
    code, out, _ = craft(capsys, "clear", "--dir", str(tmp_path), "--old-keys")
    assert out.startswith("removed 1 of 3 entries") and cache.get(old) is None and cache.get(fields("eurosat", "test")) is not None
    code, out, _ = craft(capsys, "clear", "--dir", str(tmp_path))
    assert out.startswith("removed 2 of 2 entries") and list(tmp_path.iterdir()) == []


def test_the_default_folder_is_the_caches_and_may_not_exist_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path))
    assert craft(capsys, "list")[:2] == (0, f"0 entries, 0.0 MB in {tmp_path / 'features'}\n")
    fill(tmp_path / "features")
    assert craft(capsys, "list")[1].splitlines()[-1].startswith("4 entries")


@pytest.mark.parametrize("argv, message", [
    (["list", "--dir", "/nowhere/cache"], "craft cache: error: cache folder /nowhere/cache does not exist; pass --dir with a feature cache folder\n"),
    (["clear", "--dataset", "dtdd"], "craft cache: error: unknown dataset 'dtdd'; valid keys: imagenet, "),
])
def test_bad_input_is_one_sentence(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path))
    fill(tmp_path / "features")
    code, out, err = craft(capsys, *argv)
    assert code == 2 and out == "" and err.startswith(message) and err.count("\n") == 1
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 4  # nothing removed


def test_a_file_given_as_the_folder_and_a_bad_age_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "f").write_text("x")
    code, _, err = craft(capsys, "verify", "--dir", str(tmp_path / "f"))
    assert code == 2 and err == f"craft cache: error: cache folder {tmp_path / 'f'} is not a folder; pass --dir with a feature cache folder\n"
    for bad in ("-1", "soon", "nan", "inf"):
        with pytest.raises(SystemExit) as exit_:
            craft(capsys, "clear", "--dir", str(tmp_path), "--older-than", bad)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"expected a number of days of 0 or more, got '{bad}'" in err


def test_every_flag_has_help() -> None:
    assert "cache" in SUBCOMMANDS
    parser = argparse.ArgumentParser()
    importlib.import_module(SUBCOMMANDS["cache"][0]).add_arguments(parser)
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == {"list", "verify", "clear"}
    for name, sub in subs.choices.items():
        assert sub.description or [c.help for c in subs._choices_actions if c.dest == name][0]
        for action in sub._actions:
            assert action.help, f"craft cache {name} {action.option_strings} has no help"


def test_list_imports_no_torch(tmp_path: Path) -> None:
    """Listing reads sidecars only: it does not pay torch's import (seconds on a busy machine)."""
    fill(tmp_path)
    code = ("import sys; from benchmark.cli import main; "
            f"rc = main(['cache', 'list', '--dir', {str(tmp_path)!r}]); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.splitlines()[-1] == "0 False" and "4 entries" in out.stdout
