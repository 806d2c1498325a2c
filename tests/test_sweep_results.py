"""Planning cells and keeping their results: one file per cell, atomic, resumable, any pyarrow filesystem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmark.errors import UserError
from benchmark.results.store import (
    TMP_PREFIX, cell_status, check_location, clean_temporaries, scan_cells, stray_temporaries, write_cell, write_log,
)
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import check_inputs, estimated_queries, expand, format_plan, make_plan
from benchmark.sweep.run_cell import failed_row
from benchmark.sweep.runner import cells_to_run

SWEEP = {"out": "unused", "methods": ["zero_shot_clip", "bbt", "craft"], "datasets": ["digits_noise", "digits_shift"],
         "shots": [1, 4], "seeds": [1, 2, 3], "backbones": ["craft-tiny:builtin"],
         "hparams": {"bbt": {"*": {"budget": 410}}, "craft": {"digits_shift": {"popsize": 20}}}}


def ok_row(cell, top1: float = 50.0) -> dict:
    return {"cell_id": cell.cell_id, "status": "ok", "method": cell.method, "dataset": cell.dataset,
            "eval_dataset": cell.dataset, "backbone": cell.backbone, "weights": cell.weights, "shots": cell.shots,
            "seed": cell.seed, "hparams": cell.full_hparams(), "queries": 400, "top1_test": top1}


def test_expand_makes_each_cell_once_with_zero_shot_only_at_the_largest_shots() -> None:
    cells = expand(config_from_dict(SWEEP))
    assert len({c.cell_id for c in cells}) == len(cells) == 2 * 3 * (2 * 2 + 1)
    zs = [c for c in cells if c.method == "zero_shot_clip"]
    assert {c.shots for c in zs} == {4} and len(zs) == 6
    again = expand(config_from_dict(SWEEP))
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]  # stable


def test_estimated_queries_follow_budget_and_whole_generations() -> None:
    by = {(c.method, c.dataset, c.shots): estimated_queries(c) for c in expand(config_from_dict(SWEEP))}
    assert by[("bbt", "digits_noise", 4)] == 400  # 410 in whole generations of 40
    assert by[("craft", "digits_noise", 1)] == 2000 and by[("craft", "digits_noise", 4)] == 4000  # by shots
    assert by[("craft", "digits_shift", 4)] == 4000  # popsize 20 divides it
    assert by[("zero_shot_clip", "digits_noise", 4)] == 0


def test_plan_sees_done_and_failed_cells(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    cfg = config_from_dict({**SWEEP, "out": out})
    cells = expand(cfg)
    write_cell(out, [ok_row(cells[0])])
    write_cell(out, [failed_row(cells[1], "Traceback ...\nValueError: boom")])
    plan = make_plan(cells, out)
    assert plan.status[cells[0].cell_id] == "done" and plan.status[cells[1].cell_id] == "failed"
    assert len(plan.todo()) == len(cells) - 2 and len(plan.todo(rerun_failed=True)) == len(cells) - 1
    text = format_plan(plan, cfg)
    assert f"{len(cells)} cells: 1 done, 1 failed, {len(cells) - 2} to run" in text
    status = scan_cells(out)[0]
    todo, skipped = cells_to_run(cells, status, rerun_failed=False)  # what the runner starts
    assert skipped == 2 and cells[0] not in todo and cells[1] not in todo
    todo, skipped = cells_to_run(cells, status, rerun_failed=True)
    assert skipped == 1 and cells[1] in todo


def test_a_success_replaces_the_failure_record_and_status_reads_back(tmp_path: Path) -> None:
    out = str(tmp_path)
    cell = expand(config_from_dict(SWEEP))[3]
    write_cell(out, [failed_row(cell, "boom")])
    assert cell_status(out) == {cell.cell_id: "failed"}
    path = write_cell(out, [ok_row(cell, 61.5)])
    assert cell_status(out) == {cell.cell_id: "ok"}
    assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]
    assert pq.read_table(path).column("top1_test").to_pylist() == [61.5]
    log = write_log(out, cell.method, cell.dataset, cell.cell_id, "line one\n")
    assert Path(log).read_text() == "line one\n"
    assert Path(log) == Path(out) / "_logs" / cell.method / cell.dataset / f"{cell.cell_id}.log"  # out of readers' way


def test_cleanup_removes_only_what_dead_writers_left(tmp_path: Path) -> None:
    out = tmp_path
    folder = out / "craft" / "dtd"
    folder.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = os.uname().nodename
    dead_tmp = folder / f"{TMP_PREFIX}{int(dead.stdout)}@{host}@abc.parquet"
    live_tmp = folder / f"{TMP_PREFIX}{os.getppid()}@{host}@def.parquet"  # pytest's parent: alive
    foreign_recent = folder / f"{TMP_PREFIX}1@another-host@ghi.parquet"
    for p in (dead_tmp, live_tmp, foreign_recent):
        p.write_bytes(b"partial")
    cell = expand(config_from_dict(SWEEP))[0]
    write_cell(str(out), [failed_row(cell, "boom")])
    ok = write_cell(str(out), [ok_row(cell)])
    failed_copy = Path(ok.replace(".parquet", ".failed.parquet"))
    failed_copy.write_bytes(Path(ok).read_bytes())  # as if killed between the rename and the delete
    assert clean_temporaries(str(out)) == 2
    assert not dead_tmp.exists() and not failed_copy.exists()
    assert live_tmp.exists() and foreign_recent.exists()
    assert sorted(stray_temporaries(str(out))) == sorted([str(live_tmp), str(foreign_recent)])


def test_results_go_to_a_pyarrow_filesystem_uri(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/bucket/sweep"
    cell = expand(config_from_dict(SWEEP))[2]
    write_cell(uri, [ok_row(cell)])
    assert cell_status(uri) == {cell.cell_id: "ok"}
    assert (tmp_path / "bucket" / "sweep" / cell.method / cell.dataset / f"{cell.cell_id}.parquet").is_file()


def test_bad_locations_and_roots_are_user_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_location(str(blocker / "results"))
    with pytest.raises(UserError, match="cannot use results location"):
        check_location("nosuchscheme://bucket/x")
    cfg = config_from_dict({**SWEEP, "root": str(tmp_path / "missing")})
    with pytest.raises(UserError, match=f"root {tmp_path / 'missing'} does not exist"):
        check_inputs(cfg)
    cfg = config_from_dict({**SWEEP, "backbones": ["RN50:/nowhere/rn50.pt"]})
    with pytest.raises(UserError, match="checkpoint /nowhere/rn50.pt"):
        check_inputs(cfg)


def test_a_cell_makes_its_typed_config_and_id_once_and_keeps_them() -> None:
    """Ids of existing results stay what they were (these are from before the config was held by the cell)."""
    import dataclasses
    import pickle

    from benchmark.sweep.cell import Cell
    from craft.methods import CraFTConfig, make_config

    demo = config_from_dict({"out": "unused", "methods": ["zero_shot_clip", "bbt", "craft"], "datasets": ["digits_noise"],
                             "shots": [16], "seeds": [1], "backbones": ["craft-tiny:builtin"]})
    assert [c.cell_id for c in expand(demo)] == ["aaf00a1bf8a617a81b47", "1e857e72b55dc53a9d74", "70f4a86656b058862abd"]
    cbbt = Cell("cbbt", "imagenet", 1, 1, "RN50", "openai", {"select": "best_test"}, protocol="official")
    assert cbbt.cell_id == "a35a1eb7f888df651891" and cbbt.budget() == 95604
    cell = Cell("craft", "dtd", 16, 1, "RN50", "openai", {"sigma": 0.5})
    assert isinstance(cell.config, CraFTConfig) and cell.config.sigma == 0.5
    assert cell.full_hparams() == dataclasses.asdict(make_config("craft", {"sigma": 0.5}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.config.sigma = 1.0  # type: ignore[misc]
    back = pickle.loads(pickle.dumps(cell))  # as Ray sends it
    assert back == cell and back.cell_id == cell.cell_id and back.config.sigma == 0.5
    assert dataclasses.replace(cell, hparams={"sigma": 0.25}).cell_id != cell.cell_id  # made again for the new cell
