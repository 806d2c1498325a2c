"""Reading a results folder: recursive, local or by URI, ok rows only, a clear error when empty."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_report_tables import row, write_results

from benchmark.errors import UserError
from benchmark.report.load import load_results
from benchmark.results.schema import to_table


@pytest.fixture
def results(tmp_path: Path) -> Path:
    root = write_results(tmp_path / "results", [row("craft", "dtd", 16, s) for s in (1, 2)])
    (root / "bbt").mkdir()
    pq.write_table(to_table([{**row("bbt", "dtd", 16, 1), "status": "failed", "error": "oom", "top1_test": None}]),
                   root / "bbt" / "failed.parquet")
    pq.write_table(to_table([row("bbt", "dtd", 16, 9)]), root / "bbt" / ".partial.parquet")  # a write in progress
    (root / "notes.txt").write_text("not a result")
    return root


def test_reads_every_parquet_file_recursively(results: Path) -> None:
    df = load_results(results)
    assert sorted(df["seed"]) == [1, 2] and set(df["status"]) == {"ok"}
    assert len(load_results(results, ok_only=False)) == 3
    assert load_results(f"file://{results}")["top1_test"].notna().all()
    assert len(load_results(results / "craft" / "craft-craft-tiny-dtd-16-1.parquet")) == 1


def test_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no Parquet files under"):
        load_results(tmp_path)
    with pytest.raises(UserError, match="no such file or folder"):
        load_results(tmp_path / "absent")
