"""A done cell is a readable, complete result file: damaged ones are named, kept aside and run again."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.report.load import load_results
from benchmark.results.store import DAMAGED_MARK, scan_cells, write_cell
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand, format_plan, make_plan
from benchmark.sweep.run_cell import failed_row
from tests.test_sweep_results import SWEEP, ok_row


def corrupt(path: str) -> None:
    """64 bytes in the data pages overwritten, the footer left intact (so only the page checksums tell)."""
    data = bytearray(Path(path).read_bytes())
    data[100:164] = bytes(64)
    Path(path).write_bytes(bytes(data))


def truncate(path: str) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])


def zero(path: str) -> None:
    Path(path).write_bytes(b"")


DAMAGE = {"corrupt": corrupt, "truncate": truncate, "zero": zero}


def test_damaged_files_do_not_count_as_done_and_are_named(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    cfg = config_from_dict({**SWEEP, "out": out})
    cells = expand(cfg)[:5]
    paths = [write_cell(out, [ok_row(c)]) for c in cells[:4]]
    failed = write_cell(out, [failed_row(cells[4], "boom")])
    for damage, path in zip(DAMAGE.values(), paths[1:]):
        damage(path)
    zero(failed)
    status, damaged = scan_cells(out)
    assert status == {cells[0].cell_id: "ok"}
    assert sorted(damaged) == sorted([*paths[1:], failed])
    assert "checksum" in damaged[paths[1]].lower() or "corrupt" in damaged[paths[1]].lower(), damaged[paths[1]]
    assert damaged[failed] == "empty file (0 bytes)"
    plan = make_plan(cells, out)
    assert [plan.status[c.cell_id] for c in cells] == ["done", "damaged", "damaged", "damaged", "damaged"]
    assert "4 to run (4 with a damaged result file" in format_plan(plan, cfg)


def test_a_file_with_another_cells_rows_is_damaged(tmp_path: Path) -> None:
    out = str(tmp_path)
    a, b = expand(config_from_dict(SWEEP))[:2]
    pa_, pb = write_cell(out, [ok_row(a)]), write_cell(out, [ok_row(b)])
    Path(pb).write_bytes(Path(pa_).read_bytes())  # b's name, a's rows
    status, damaged = scan_cells(out)
    assert status == {a.cell_id: "ok"} and damaged == {pb: f"rows name another cell than {b.cell_id}"}


def test_tables_skip_a_damaged_file_with_a_warning_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path)
    cells = expand(config_from_dict(SWEEP))[:3]
    paths = [write_cell(out, [ok_row(c, 40.0 + i)]) for i, c in enumerate(cells)]
    truncate(paths[1])
    # The library warns through its logger; where that lands is the caller's logging setup (the CLI's
    # stderr below), so the warning is read at the logger, whatever earlier tests configured.
    warned = logging.handlers.BufferingHandler(100)
    logger = logging.getLogger("benchmark.report.load")
    level = logger.level
    logger.setLevel(logging.WARNING)  # whatever an earlier CLI call (--quiet) left
    logger.addHandler(warned)
    try:
        df = load_results(out)
    finally:
        logger.removeHandler(warned)
        logger.setLevel(level)
    assert sorted(df["cell_id"]) == sorted([cells[0].cell_id, cells[2].cell_id])
    assert [r.levelno for r in warned.buffer] == [logging.WARNING]
    assert f"skipped damaged result file {paths[1]}" in warned.buffer[0].getMessage()
    assert main(["table", out]) == 0
    captured = capsys.readouterr()
    assert "| Method" in captured.out or "Method" in captured.out
    assert f"skipped damaged result file {paths[1]}" in captured.err


def test_craft_results_lists_damaged_files_and_moves_them_aside(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path)
    cells = expand(config_from_dict(SWEEP))[:2]
    good, bad = (write_cell(out, [ok_row(c)]) for c in cells)
    zero(bad)
    assert main(["results", out]) == 1
    text = capsys.readouterr().out
    assert f"{out}: 1 cells done, 0 failed, 1 damaged result file(s)" in text
    assert f"damaged: {bad}: empty file (0 bytes)" in text
    assert main(["results", out, "--move-aside"]) == 0
    moved = list(Path(bad).parent.glob(f".{Path(bad).name}{DAMAGED_MARK}*"))
    assert len(moved) == 1 and moved[0].read_bytes() == b""  # kept as it was
    assert not Path(bad).exists() and Path(good).exists()
    assert main(["results", out]) == 0
    assert main(["results", str(tmp_path / "nowhere")]) == 2


def test_a_rerun_recomputes_each_damaged_cell_once_and_keeps_the_damaged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Done when (issue 23, point 3): corrupt, truncate and zero done files; rerun; each cell once; the table renders."""
    ray = pytest.importorskip("ray")
    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.serve.options import ServerOptions
    from benchmark.sweep.runner import run_sweep

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    out = str(tmp_path / "out")
    cfg = config_from_dict({
        "out": out, "datasets": ["digits_rotate"], "methods": ["zero_shot_clip"], "shots": [2],
        "seeds": [1, 2, 3, 4], "backbones": ["craft-tiny:builtin"],
    })
    cells = expand(cfg)
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        first = run_sweep(cells, out, ServerOptions(runs_per_server=2), progress=False)
        assert (first.done, first.failed) == (4, 0)
        before = load_results(out).set_index("cell_id")["top1_test"]
        paths = {c.cell_id: str(Path(out) / c.method / c.dataset / f"{c.cell_id}.parquet") for c in cells}
        for damage, cell in zip(DAMAGE.values(), cells[1:]):
            damage(paths[cell.cell_id])
        second = run_sweep(cells, out, ServerOptions(runs_per_server=2), progress=False)
        third = run_sweep(cells, out, ServerOptions(runs_per_server=2), progress=False)
    finally:
        ray.shutdown()
    assert (second.done, second.skipped, second.failed, len(second.moved_aside)) == (3, 1, 0, 3)
    assert (third.done, third.skipped) == (0, 4)
    for cell in cells:
        folder = Path(paths[cell.cell_id]).parent
        assert len(list(folder.glob(f"{cell.cell_id}.parquet"))) == 1
        assert len(list(folder.glob(f".{cell.cell_id}.parquet{DAMAGED_MARK}*"))) == (cell in cells[1:])
    after = load_results(out).set_index("cell_id")["top1_test"]
    assert after.sort_index().tolist() == before.sort_index().tolist()  # zero-shot: the same numbers again
    capsys.readouterr()
    assert main(["table", out]) == 0
    assert "ZS-CLIP" in capsys.readouterr().out


def test_a_dead_writers_temporary_is_removed_even_when_nothing_is_left_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Issue 23, point 8: clean-up of stray temporaries runs before anything else."""
    import subprocess
    import sys

    import yaml

    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.results.store import TMP_PREFIX, stray_temporaries

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    out = tmp_path / "out"
    raw = {"out": str(out), "datasets": ["digits_rotate"], "methods": ["zero_shot_clip"], "shots": [2],
           "seeds": [1, 2], "backbones": ["craft-tiny:builtin"]}
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    paths = [write_cell(str(out), [ok_row(c)]) for c in expand(config_from_dict(raw))]
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    tmp = Path(paths[0]).parent / f"{TMP_PREFIX}{dead}@{__import__('socket').gethostname()}@x.parquet"
    tmp.write_bytes(b"half")
    assert main(["bench", str(config)]) == 0
    assert "nothing to run: all 2 cells" in capsys.readouterr().out
    assert stray_temporaries(str(out)) == [] and not tmp.exists()
