"""``craft weights fetch|list`` and the driver's resolution of a backbone's weights to one checked file
(issue 21). Downloads go through open_clip's own machinery, pointed at a ``file://`` URL here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.files import file_sha256
from benchmark.model import weights as W
from benchmark.model.builtin import builtin_model_paths

TINY = builtin_model_paths()[1]


@pytest.fixture
def fake_tag(tmp_path: Path, monkeypatch):
    """A pretrained tag ``craft-tiny:filetest`` whose release URL is a local file (no network here)."""
    from open_clip import pretrained

    src = tmp_path / "release" / "craft-tiny.safetensors"
    src.parent.mkdir()
    shutil.copy(TINY, src)
    monkeypatch.setitem(pretrained._PRETRAINED, "craft-tiny", {"filetest": {"url": src.as_uri()}})
    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return src


def test_fetch_into_a_folder_records_sha256_and_the_sweep_resolves_it(tmp_path: Path, fake_tag, capsys) -> None:
    shared = tmp_path / "shared"
    assert main(["weights", "fetch", "craft-tiny:filetest", "--dir", str(shared)]) == 0
    entry = json.loads((shared / "manifest.json").read_text())["weights"]["craft-tiny:filetest"]
    assert entry["path"] == "craft-tiny/filetest/craft-tiny.safetensors"  # relative: the folder may be mounted elsewhere
    assert entry["sha256"] == file_sha256(TINY) and entry["bytes"] == TINY.stat().st_size
    assert [p.name for p in shared.iterdir() if p.name.startswith(".")] == []  # no temporary left
    f = W.resolve("craft-tiny", "filetest", str(shared))
    assert f.path == str(shared / entry["path"]) and f.sha256 == entry["sha256"]
    # a URI location: copied to this machine once, named by its digest
    g = W.resolve("craft-tiny", "filetest", shared.as_uri())
    assert g.path == str(W.staged_path(entry["sha256"], ".safetensors")) and file_sha256(g.path) == entry["sha256"]
    assert main(["weights", "list", "--dir", str(shared)]) == 0
    assert f"craft-tiny:filetest  manifest {shared}" in capsys.readouterr().out
    # a damaged file is refused, not loaded
    Path(f.path).write_bytes(b"x" * entry["bytes"])
    with pytest.raises(UserError, match="does not match the sha256"):
        W.resolve("craft-tiny", "filetest", str(shared))


def test_fetch_without_dir_stays_in_open_clips_cache_and_is_found(tmp_path: Path, fake_tag, monkeypatch) -> None:
    monkeypatch.setattr("os.path.expanduser", lambda p: p.replace("~", str(tmp_path / "home")))
    with pytest.raises(UserError, match=r"not on this machine .* craft weights fetch craft-tiny:filetest"):
        W.resolve("craft-tiny", "filetest")
    [got] = W.fetch(["craft-tiny:filetest"])
    assert got.path == str(tmp_path / "home" / ".cache" / "clip" / "craft-tiny.safetensors")
    assert W.resolve("craft-tiny", "filetest").path == got.path
    assert (W.default_dir() / "manifest.json").is_file()


@pytest.mark.parametrize("argv, expected", [
    (["fetch", "RN5O"], "unknown backbone 'RN5O'"),
    (["fetch", "RN50:laion"], "RN50 has no pretrained tag 'laion'"),
    (["fetch", "RN50", "--dir", "s3://b/w"], "fetch writes a local or mounted folder"),
])
def test_bad_fetches_are_one_sentence_and_write_nothing(tmp_path: Path, capsys, argv, expected) -> None:
    out = tmp_path / "w"
    assert main(["weights", *argv] + ([] if "--dir" in argv else ["--dir", str(out)])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("craft weights: error: ") and expected in err and "\n" not in err, err
    assert not out.exists()


def test_no_network_is_one_sentence_at_once_and_writes_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    out = tmp_path / "w"
    assert main(["weights", "fetch", "RN50", "--dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot fetch RN50:openai: 127.0.0.1:9 does not answer" in err and "\n" not in err
    assert not out.exists()


def test_a_weights_location_that_does_not_exist_is_refused_before_anything(tmp_path: Path, capsys) -> None:
    cfg = {"out": str(tmp_path / "out"), "methods": ["zero_shot_clip"], "datasets": ["digits_rotate"], "shots": [2],
           "seeds": [1], "backbones": ["RN50:openai"], "weights": str(tmp_path / "nowhere")}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["bench", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"weights location {tmp_path / 'nowhere'} does not exist" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match="weights location file:///no/such/place does not exist"):
        W.read_manifest("file:///no/such/place")
