"""The test process ends with pytest's exit status and without the interpreter's teardown (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Registered at import, before the conftest's ending: run only by a full teardown.
PROBE = '''
import atexit, os

atexit.register(lambda: os.write(1, b"TEARDOWN RAN\\n"))


def test_passes():
    pass


def test_fails_when_asked():
    assert os.environ.get("PROBE_FAIL") != "1"
'''


def run_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_probe.py").write_text(PROBE)
    full_env = {k: v for k, v in os.environ.items() if k != "CRAFT_TEST_FULL_TEARDOWN"} | env
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           str(tmp_path / "test_probe.py")], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("fail, status", [("0", 0), ("1", 1)])
def test_the_session_keeps_its_status_and_skips_the_teardown(tmp_path: Path, fail: str, status: int) -> None:
    done = run_probe(tmp_path, PROBE_FAIL=fail)
    assert done.returncode == status, done.stdout + done.stderr
    assert ("1 failed" if status else "2 passed") in done.stdout  # the summary was written before the end
    assert "TEARDOWN RAN" not in done.stdout


def test_the_switch_gives_the_full_teardown_back(tmp_path: Path) -> None:
    done = run_probe(tmp_path, PROBE_FAIL="1", CRAFT_TEST_FULL_TEARDOWN="1")
    assert done.returncode == 1 and "TEARDOWN RAN" in done.stdout, done.stdout + done.stderr
