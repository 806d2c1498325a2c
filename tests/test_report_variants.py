"""Tables of variants (``--group-by``, ``--where``), two folders compared, and the cost line (issue 22, item 3)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmark.cli import main
from tests.test_report_tables import md_cells, row, write_results

DATASETS = ["digits_noise", "digits_invert"]


def values(text: str, *keys: str) -> list[str]:
    """The cells after ``keys`` of the Markdown row that starts with them."""
    return md_cells(text, *keys)[len(keys):]


def budget_folder(root: Path) -> Path:
    """BBT at two budgets per dataset and seed (a budget sweep): 400 scores seed + 40, 800 scores seed + 50."""
    rows = [row("bbt", d, 16, s, top1=base + s, budget=budget, queries=budget, gpu_s=36.0,
                hparams={"budget": budget, "sigma": 0.5}, cell_id=f"bbt-{d}-{s}-{budget}")
            for d in DATASETS for s in (1, 2, 3) for budget, base in ((400, 40.0), (800, 50.0))]
    return write_results(root, rows)


def test_a_budget_sweep_renders_one_row_per_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = str(budget_folder(tmp_path))
    assert main(["table", folder]) == 2
    err = capsys.readouterr().err
    assert "differing in budget" in err and "--group-by budget" in err
    assert main(["table", folder, "--group-by", "budget", "--cost"]) == 0
    out = capsys.readouterr().out
    assert "| Shots | Method | Variant |" in out
    assert values(out, "16", "BBT", "budget=400") == ["42.00 ± 1.00", "42.00 ± 1.00", "42.00 ± 1.00"]
    assert values(out, "16", "BBT", "budget=800") == ["**52.00** ± 1.00"] * 3
    assert "cost: 12 runs, 7,200 queries, images encoded: not recorded, wall hours: not recorded, 0.120 GPU hours" in out
    assert main(["table", folder, "--group-by", "hparams.budget", "--format", "csv"]) == 0
    assert "16,bbt,budget=800,52," in capsys.readouterr().out
    assert main(["table", folder, "--where", "budget == 400"]) == 0  # one run per cell left: no Variant column
    out = capsys.readouterr().out
    assert "Variant" not in out and values(out, "16", "BBT")[0] == "42.00 ± 1.00"
    assert main(["table", folder, "--where", "`hparams.sigma` == 0.5 and budget > 400", "--kind", "cost"]) == 0
    assert values(capsys.readouterr().out, "BBT")[:2] == ["6", "800"]  # runs, mean queries
    for bad, said in ((["--where", "budget >"], "--where 'budget >' is not a query"),
                      (["--where", "budget > 10000"], "keeps none of the 12 result rows"),
                      (["--group-by", "nosuch"], "--group-by nosuch: no such column")):
        assert main(["table", folder, *bad]) == 2
        assert said in capsys.readouterr().err


def seeds_folder(root: Path, noise: tuple[float, ...], invert: tuple[float, ...]) -> str:
    rows = [row("craft", d, 16, s, top1=v, queries=1000) for d, values in (("digits_noise", noise), ("digits_invert", invert))
            for s, v in zip((1, 2, 3), values)]
    return str(write_results(root, rows))


def welch_p(a: list[float], b: list[float]) -> float:
    """Welch's two-sided p, written out here: t, Welch-Satterthwaite degrees of freedom, Student's t tail."""
    from scipy.stats import t as student

    va, vb = (sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1) / len(v) for v in (a, b))
    t = (sum(b) / len(b) - sum(a) / len(a)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return 2 * student.sf(abs(t), df)


def test_compare_puts_two_folders_side_by_side_with_deltas_and_a_noise_test(tmp_path: Path, capsys) -> None:
    a = seeds_folder(tmp_path / "a", (50.0, 52.0, 54.0), (50.0, 52.0, 54.0))
    b = seeds_folder(tmp_path / "b", (60.0, 61.0, 62.0), (51.0, 53.0, 55.0))
    assert main(["table", a, b, "--kind", "compare", "--cost"]) == 0
    out = capsys.readouterr().out
    noise = values(out, "craft-tiny", "CraFT", "16", "Digits-Noise")
    assert noise[:5] == ["52.00 ± 2.00", "3", "61.00 ± 1.00", "3", "+9.00"]
    assert noise[5] == f"{welch_p([50, 52, 54], [60, 61, 62]):.3f}" and noise[6] == "yes"
    invert = values(out, "craft-tiny", "CraFT", "16", "Digits-Invert")
    assert invert[4] == "+1.00" and invert[6] == "no" and float(invert[5]) > 0.5
    average = values(out, "craft-tiny", "CraFT", "16", "Average")  # per-seed averages: 50 52 54 and 55.5 57 58.5
    assert average[:5] == ["52.00 ± 2.00", "3", "57.00 ± 1.50", "3", "+5.00"]
    assert f"A: {a}; B: {b}" in out and "Welch's t-test" in out
    assert f"{a}: cost: 6 runs, 6,000 queries" in out
    assert main(["table", a, "--kind", "compare"]) == 2
    assert "takes two results folders" in capsys.readouterr().err
