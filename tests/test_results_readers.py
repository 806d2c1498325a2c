"""A results folder opens as it is in every common Parquet reader (issue 22, item 1), old layout included."""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as pads
import pytest

from benchmark.cli import main
from benchmark.report.load import load_results
from benchmark.results.store import LOCK_NAME, scan_cells, tidy_logs, write_cell, write_log
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand
from benchmark.sweep.run_cell import failed_row
from tests.test_sweep_results import SWEEP, ok_row


def sweep_folder(out: Path, old_layout: bool = False) -> list[str]:
    """Four done cells and a failed one, each with its log, plus a dead writer's temporary and the lock
    file, as a sweep leaves them; ``old_layout``: logs beside the results, as folders before ``_logs/``."""
    cells = expand(config_from_dict(SWEEP))[:5]
    for i, c in enumerate(cells[:4]):
        path = write_cell(str(out), [ok_row(c, 40.0 + i)])
        log = write_log(str(out), c.method, c.dataset, c.cell_id, "a log line\n")
        if old_layout:
            Path(log).rename(Path(path).with_suffix(".log"))
    write_cell(str(out), [failed_row(cells[4], "Traceback\nValueError: boom")])
    (out / cells[0].method / cells[0].dataset / ".tmp-1@host@abc.tmp").write_bytes(b"partial")
    (out / LOCK_NAME).write_text("pid 1")
    return sorted(c.cell_id for c in cells)


def read_every_way(folder: Path) -> dict[str, list[tuple[str, str]]]:
    """(cell_id, status) of every row, as pandas, pyarrow.dataset, polars and DuckDB read the folder."""
    import duckdb
    import pandas as pd
    import polars as pl

    def pairs(ids, statuses) -> list[tuple[str, str]]:
        return sorted(zip(ids, statuses))

    df = pd.read_parquet(folder)
    table = pads.dataset(folder).to_table()
    pf = pl.read_parquet(f"{folder}/**/*.parquet")
    db = duckdb.sql(f"SELECT cell_id, status FROM read_parquet('{folder}/**/*.parquet')").fetchall()
    return {
        "pandas": pairs(df["cell_id"], df["status"]),
        "pyarrow": pairs(table.column("cell_id").to_pylist(), table.column("status").to_pylist()),
        "polars": pairs(pf["cell_id"].to_list(), pf["status"].to_list()),
        "duckdb": sorted(db),
    }


def test_every_reader_opens_a_results_folder_as_it_is_with_the_same_rows(tmp_path: Path) -> None:
    ids = sweep_folder(tmp_path)
    read = read_every_way(tmp_path)
    assert sorted(i for i, _ in read["pandas"]) == ids
    assert sum(s == "failed" for _, s in read["pandas"]) == 1
    assert read["pyarrow"] == read["polars"] == read["duckdb"] == read["pandas"]
    assert len(load_results(tmp_path)) == 4  # the harness's own reader: ok rows


def test_an_old_layout_folder_still_reads_and_its_logs_move_under_logs(tmp_path: Path, capsys) -> None:
    ids = sweep_folder(tmp_path, old_layout=True)
    beside = sorted(tmp_path.glob("*/*/*.log"))
    assert len(beside) == 4
    with pytest.raises(Exception, match=r"\.log"):  # what issue 22 saw: pyarrow refuses the old layout
        pads.dataset(tmp_path).to_table()
    status, damaged = scan_cells(str(tmp_path))  # resume and verification never read a log
    assert sorted(status) == ids and not damaged
    assert len(load_results(tmp_path)) == 4
    assert main(["results", str(tmp_path), "--tidy"]) == 0
    assert "moved 4 log(s) under _logs/" in capsys.readouterr().out
    assert not list(tmp_path.glob("*/*/*.log")) and len(list((tmp_path / "_logs").glob("*/*/*.log"))) == 4
    assert sorted(i for i, _ in read_every_way(tmp_path)["pyarrow"]) == ids
    assert tidy_logs(str(tmp_path)) == {}  # once only
