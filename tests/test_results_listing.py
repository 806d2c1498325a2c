"""``craft results``: cells done and failed (with their error's last line), totals, what a config has left."""

from __future__ import annotations

from pathlib import Path

import yaml

from benchmark.cli import main
from benchmark.results.store import write_cell
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand
from benchmark.sweep.run_cell import failed_row
from tests.test_sweep_results import SWEEP, ok_row


def test_craft_results_lists_cells_costs_and_what_a_config_leaves(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    cells = expand(config_from_dict(SWEEP))
    for i, c in enumerate(cells[:3]):
        sweep = {"config_hash": "0123456789abcdef", "config": '{"path": "sweep.yaml"}'} if i else {}
        write_cell(str(out), [{**ok_row(c), "wall_s": 1800.0, "gpu_s": 360.0 if i else None, **sweep}])
    write_cell(str(out), [failed_row(cells[3], "Traceback (most recent call last):\n  ...\nValueError: boom\n\n")])
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({**SWEEP, "out": "elsewhere"}))

    assert main(["results", str(out), "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert f"{out}: 3 cells done, 1 failed, 0 damaged" in text
    assert "done cells used 1,200 queries, 1.500 wall hours (3 of 3 record it), 0.200 GPU hours (2 of 3 record it)" in text
    assert "sweeps: 0123456789abcdef (sweep.yaml): 2 cells; not recorded (older rows): 2 cells" in text
    assert f"failed: {cells[3].label()} ({cells[3].cell_id}): ValueError: boom" in text
    assert f"sweep {config} -> {out}" in text
    assert f"{len(cells)} cells: 3 done, 1 failed, {len(cells) - 4} to run" in text
    assert f"todo: {cells[4].label()} ({cells[4].cell_id})" in text and f"failed: {cells[3].label()}" in text
    assert f"... and {len(cells) - 3 - 20} more" in text

    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [nosuch]\n")
    assert main(["results", str(out), "--config", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
