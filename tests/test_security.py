"""Issue 23, point 9: no password echoed, Ray's token file private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from tuning.storage import masked


def test_a_storage_urls_password_is_masked() -> None:
    url = "postgresql://alice:s3cret@db.example:5432/optuna"
    assert masked(url) == "postgresql://alice:***@db.example:5432/optuna"
    assert masked(f"could not connect to {url}: password s3cret refused", url) == (
        "could not connect to postgresql://alice:***@db.example:5432/optuna: password *** refused")
    assert masked("sqlite:///x.db") == "sqlite:///x.db" and masked("out/optuna.journal") == "out/optuna.journal"


def test_tune_errors_never_echo_the_password(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:  # noqa: ANN001
    from benchmark.datasets.builtin import ensure_builtin_suite

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"methods": ["bbt"], "datasets": ["digits_noise"], "backbones": ["craft-tiny:builtin"],
                                      "out": str(tmp_path / "o"), "storage": "postgresql://alice:s3cret@127.0.0.1:1/optuna"}))
    assert main(["tune", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "s3cret" not in err and "postgresql://alice:***@127.0.0.1:1/optuna" in err and err.count("\n") == 1


def test_rays_token_file_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark.serve.ray_runtime import protect_auth_token

    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("t" * 64)
    token.chmod(0o644)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert protect_auth_token() == str(token)
    assert stat.S_IMODE(os.stat(token).st_mode) == 0o600
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    assert protect_auth_token() is None
