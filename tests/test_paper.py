"""``craft paper``: the shipped grids parse into one plan of unique cells, and the report holds every table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.sweep.paper import paper_plan, write_report
from tests.test_report_tables import row, write_results

REPO = Path(__file__).resolve().parent.parent
DIGITS = ("digits_noise", "digits_invert", "digits_rotate", "digits_shift")


def test_the_builtin_grid_is_the_papers_on_the_builtin_suite(tmp_path: Path) -> None:
    plan = paper_plan("builtin", str(tmp_path / "out"))
    cells = plan.cells()
    assert len({c.cell_id for c in cells}) == len(cells)
    by = {(c.method, c.shots) for c in cells}
    assert {("bbt", k) for k in (1, 2, 4, 8, 16)} | {("craft", k) for k in (1, 2, 4, 8, 16)} <= by
    assert {m for m, _ in by} == {"zero_shot_clip", "bbt", "craft", "coop", "cbbt"}
    assert not {m for m, k in by if m in ("coop", "cbbt") and k != 16}
    assert {c.seed for c in cells} == {1, 2, 3} and {c.dataset for c in cells} == set(DIGITS)
    # Shift: the 16-shot Digits-Noise runs are also scored on the other three.
    noise16 = [c for c in cells if c.dataset == "digits_noise" and c.shots == 16 and c.method != "zero_shot_clip"]
    assert noise16 and all(set(c.eval_datasets) == set(DIGITS[1:]) for c in noise16)
    assert all(cfg.protocol == "official" for cfg in plan.parts.values())
    # 4 datasets x 3 seeds x (zero-shot + BBT and CraFT at 5 shots + CoOp and CBBT at 16 shots)
    assert len(cells) == 4 * 3 * (1 + 2 * 5 + 2)


def test_the_coop_grid_covers_the_papers_tables() -> None:
    plan = paper_plan("coop", root="/nonexistent")
    cells = plan.cells()
    shift = [c for c in cells if c.dataset == "imagenet" and c.eval_datasets]
    assert {c.backbone for c in shift} == {"RN50", "RN101", "ViT-B-32", "ViT-B-16"}
    assert len({c.dataset for c in cells}) == 11
    assert cells[0].dataset == "imagenet"  # the most expensive first: 1,000 classes
    backbones = paper_plan("coop", root="/x", backbones=["RN50:openai"])
    assert {c.backbone for c in backbones.cells()} == {"RN50"}


def test_the_coop_dry_run_needs_no_data_and_names_the_part_that_bounds_it(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "paper", "--suite", "coop", "--dry-run",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("craft paper --suite coop: 477 cells in all") and "GPU-hours on one H100" in last
    assert "the largest part: references" in last and not (tmp_path / "o").exists()


def test_the_builtin_dry_run_counts_the_images_its_runs_encode(tmp_path: Path, capsys) -> None:
    """Official protocol on the built-in digits (10 classes): CraFT's fresh views, 50/100/100/200/200
    generations at 1/2/4/8/16 shots, (500 + 2,000 + 4,000 + 16,000 + 32,000) x 3 seeds x 4 sets =
    654,000; CoOp's Dassl views, 200 epochs x 160 images x 3 x 4 = 384,000; BBT, CBBT, zero-shot none."""
    from benchmark.cli import main

    assert main(["paper", "--suite", "builtin", "--dry-run", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "images to encode: 654,000 (fresh augmented views" in text and "images to encode: 384,000 (" in text
    assert "and 1,038,000 images to encode (not in the estimate)" in text.strip().splitlines()[-1]


def test_a_bad_backbone_is_one_sentence_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="craft paper --suite builtin"):
        paper_plan("builtin", str(tmp_path), backbones=["no-such-net:builtin"])
    done = subprocess.run([sys.executable, "-m", "benchmark.cli", "paper", "--suite", "coop", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2 and done.stderr.startswith("craft paper: error: --suite coop needs --root")
    assert not (tmp_path / "o").exists()


def test_the_report_holds_every_table_and_the_figures(tmp_path: Path) -> None:
    plan = paper_plan("builtin", str(tmp_path / "out"))
    cells = plan.cells()
    rows = []
    for c in cells:
        common = {"cell_id": c.cell_id, "wall_s": 10.0 if c.method != "coop" else 40.0, "queries": 100,
                  "peak_mem_mb": 100.0 if c.method == "coop" else 1.0, "budget": 8000,
                  "learned_bytes": 2**20 if c.method == "craft" else 10}
        for target in (c.dataset, *c.eval_datasets):
            r = row(c.method, c.dataset, c.shots, c.seed, eval_dataset=target, **common)
            rows.append({**r, "cell_id": c.cell_id})
    write_results(Path(plan.out), rows)
    written = write_report(plan, cells)
    text = (Path(plan.out) / "report" / "tables.md").read_text()
    for title in ("Distribution shift: top-1 accuracy (%) trained on Digits-Noise", "Cost per run", "Claims of the CraFT"):
        assert title in text, title
    assert "not rendered" not in text and "cost: 156 runs" in text
    assert "1/100.0" in text  # what CraFT deploys, 1 MiB, over CoOp's 100 MiB, from the rows
    names = {p.name for p in written}
    assert {"few-shot.csv", "shift.csv", "cost.csv", "claims.csv", "report.html"} <= names
    assert "Claims of the CraFT" in (Path(plan.out) / "report" / "report.html").read_text()
    assert any(n.startswith("shots_") and n.endswith(".png") for n in names)
