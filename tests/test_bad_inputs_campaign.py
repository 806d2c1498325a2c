"""The bad-input campaign script (``measurement/bad_inputs.py``): its classifier, and a sample of its catalogue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from measurement.bad_inputs import ACCEPTED, ONE, OTHER, REPORTED, TOLERATED, TRACEBACK, classify

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("argv, rc, out, err, kw, outcome", [
    (["bench", "c.yaml"], 2, "", "craft bench: error: c.yaml: unknown key 'x'\n", {}, ONE),
    (["cache", "clear"], 2, "", "craft cache clear: error: argument --older-than: got 'x'\n", {}, ONE),
    (["nope"], 2, "", "craft: error: argument COMMAND: invalid choice: 'nope'\n", {}, ONE),
    (["bench", "c.yaml"], 2, "", "usage: craft bench [-h] config\ncraft bench: error: the following ...\n", {}, OTHER),
    (["bench", "c.yaml"], 2, "", "note: something\ncraft bench: error: x\n", {}, OTHER),
    (["bench", "c.yaml"], 2, "", "craft table: error: x\n", {}, OTHER),  # another command's name
    (["bench", "c.yaml"], 1, "", "Traceback (most recent call last):\n  ...\nValueError: boom\n", {}, TRACEBACK),
    (["bench", "c.yaml"], 2, "", "craft bench: error: x Traceback\n", {}, TRACEBACK),
    (["bench", "c.yaml"], 0, "sweep c.yaml -> r\n3 cells: ...\n", "", {}, ACCEPTED),
    (["demo"], 2, "", "craft demo: error: could not start a local Ray runtime: NotADirectoryError: x\n",
     {"ray_guard": True}, ACCEPTED),
    (["datasets", "check"], 1, "digits_noise  MISSING\n0 of 1 datasets ok\n", "", {"expect": REPORTED}, REPORTED),
    (["datasets", "check"], 1, "0 of 1 datasets ok\n", "", {}, OTHER),  # a report where a sentence was due
    (["bench", "c.yaml"], None, "", "", {}, OTHER),  # timed out
])
def test_classify(argv: list[str], rc: int | None, out: str, err: str, kw: dict, outcome: str) -> None:
    assert classify(argv, rc, out, err, **kw)[0] == outcome


def test_tolerated_inputs_must_give_the_right_plan() -> None:
    assert classify(["bench"], 0, "3 cells: ...", "", expect=TOLERATED, plan_says="3 cells:")[:2] == (ACCEPTED, True)
    assert classify(["bench"], 0, "6 cells: ...", "", expect=TOLERATED, plan_says="3 cells:")[:2] == (ACCEPTED, False)
    assert classify(["bench"], 0, "3 cells: ...", "")[:2] == (ACCEPTED, False)  # a bad input that passed


def test_a_sample_of_the_catalogue_through_the_real_command(tmp_path: Path) -> None:
    """Ten bad inputs spread over the catalogue, run by the script as it runs all of them: one sentence each."""
    run = subprocess.run([sys.executable, "-m", "measurement.bad_inputs", "--sample", "10", "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=REPO, timeout=240,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "cases.json").read_text())
    assert len(report["cases"]) == 10 and report["totals"]["one_sentence"] == 10
    assert {c["outcome"] for c in report["cases"]} == {ONE}
    assert len({c["group"] for c in report["cases"]}) >= 5  # spread, not ten of one key
    assert (tmp_path / "cases.csv").read_text().count("\n") == 11
    assert "total" in run.stdout and "tracebacks 0" in run.stdout
