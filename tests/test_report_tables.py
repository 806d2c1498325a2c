"""Tables from a synthetic results folder: values checked against numbers computed here, in every format."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.report.load import load_results
from benchmark.report.published import PUBLISHED_SOURCE, published_results
from benchmark.report.render import render, render_table
from benchmark.report.tables import ON_TEST_NOTE, build_table
from benchmark.results.schema import to_table

DIGITS = ["digits_noise", "digits_invert", "digits_rotate", "digits_shift"]  # registry order
SHIFT = ["imagenet", "imagenet_v2", "imagenet_sketch", "imagenet_a", "imagenet_r"]


def accuracy(method: str, dataset: str, shots: int, seed: int) -> float:
    """A made-up accuracy that differs by method, dataset, shots and seed."""
    base = {"zero_shot_clip": 40.0, "bbt": 45.0, "cbbt": 47.0, "craft": 50.0, "coop": 52.0}[method]
    spread = 1 + DIGITS.index(dataset) % 2 if dataset in DIGITS else 1
    return base + 3.0 * (sum(map(ord, dataset)) % 7) + shots / 4 + 0.7 * seed * spread


def row(method: str, dataset: str, shots: int, seed: int, *, eval_dataset: str | None = None,
        backbone: str = "craft-tiny", top1: float | None = None, **extra) -> dict:
    eval_dataset = eval_dataset or dataset
    return {
        "cell_id": f"{method}-{backbone}-{dataset}-{shots}-{seed}",
        "status": "ok",
        "method": method,
        "dataset": dataset,
        "eval_dataset": eval_dataset,
        "backbone": backbone,
        "shots": shots,
        "seed": seed,
        "top1_test": accuracy(method, eval_dataset, shots, seed) if top1 is None else top1,
        **extra,
    }


def write_results(root: Path, rows: list[dict]) -> Path:
    """One Parquet file per cell, as the sweep writes them (in nested folders, to check the recursive read)."""
    cells: dict[str, list[dict]] = {}
    for r in rows:
        cells.setdefault(r["cell_id"], []).append(r)
    for cell_id, cell_rows in cells.items():
        folder = root / cell_rows[0]["method"]
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(to_table(cell_rows), folder / f"{cell_id}.parquet")
    return root


# craft has no digits_shift at 16 shots, and only 2 seeds on digits_rotate at 1 shot.
FEW_SHOT_RUNS = (
    [("zero_shot_clip", d, k, s) for d in DIGITS for k in (1, 16) for s in (1, 2)]
    + [("bbt", d, k, s) for d in DIGITS for k in (1, 16) for s in (1, 2, 3)]
    + [("craft", d, 1, s) for d in DIGITS for s in (1, 2, 3) if not (d == "digits_rotate" and s == 3)]
    + [("craft", d, 16, s) for d in DIGITS[:3] for s in (1, 2, 3)]
)


@pytest.fixture
def few_shot_dir(tmp_path: Path) -> Path:
    rows = [row(*r) for r in FEW_SHOT_RUNS]
    rows.append({**row("craft", "digits_shift", 16, 1), "status": "failed", "error": "boom", "top1_test": None})
    return write_results(tmp_path / "results", rows)


def expected(method: str, dataset: str, shots: int) -> tuple[float, float]:
    values = [
        accuracy(m, d, k, s)
        for m, d, k, s in FEW_SHOT_RUNS
        if (m, d) == (method, dataset) and (k == shots or m == "zero_shot_clip")
    ]
    return statistics.mean(values), statistics.stdev(values)


def md_cells(text: str, *keys: str) -> list[str]:
    """The cells of the Markdown row whose first cells are ``keys``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[: len(keys)] == list(keys):
            return cells
    raise AssertionError(f"no row {keys} in\n{text}")


def test_few_shot_markdown_values_bold_and_missing(few_shot_dir: Path) -> None:
    text = render_table(load_results(few_shot_dir), "few-shot", "md")
    header = md_cells(text, "Shots")
    assert header == ["Shots", "Method", "Digits-Noise", "Digits-Invert", "Digits-Rotate", "Digits-Shift", "Average"]

    # Zero-shot shown once, at shots 0, over its runs at every shots value.
    zs = md_cells(text, "0", "ZS-CLIP")
    mean, std = expected("zero_shot_clip", "digits_noise", 0)
    assert zs[2] == f"{mean:.2f} ± {std:.2f}"
    assert sum(line.count("ZS-CLIP") for line in text.splitlines()) == 1

    # 16 shots: craft beats bbt where it has data (bold), has no digits_shift (dash), so no Average.
    bbt, craft = md_cells(text, "16", "BBT"), md_cells(text, "16", "CraFT")
    for i, d in enumerate(DIGITS[:3], start=2):
        m_c, s_c = expected("craft", d, 16)
        m_b, s_b = expected("bbt", d, 16)
        assert craft[i] == f"**{m_c:.2f}** ± {s_c:.2f}" and bbt[i] == f"{m_b:.2f} ± {s_b:.2f}"
    assert craft[5] == "-" and craft[6] == "-"
    bbt_avg = statistics.mean(expected("bbt", d, 16)[0] for d in DIGITS)
    per_seed = [statistics.mean(accuracy("bbt", d, 16, s) for d in DIGITS) for s in (1, 2, 3)]
    assert bbt[6] == f"{bbt_avg:.2f} ± {statistics.stdev(per_seed):.2f}"
    assert bbt[5] == f"{expected('bbt', 'digits_shift', 16)[0]:.2f} ± {expected('bbt', 'digits_shift', 16)[1]:.2f}"
    assert "missing: craft/digits_shift/16-shot" in text
    assert "fewer seeds: craft/digits_rotate/1-shot (2 of 3)" in text


def test_lone_value_is_not_bold(few_shot_dir: Path) -> None:
    table = build_table(load_results(few_shot_dir), "few-shot", shots=[16])
    assert table.find(method="bbt", shots=16)["digits_shift"].bold is False
    assert table.find(method="bbt", shots=16)["digits_noise"].bold is False
    assert table.find(method="craft", shots=16)["digits_noise"].bold is True
    assert table.missing == ["craft/digits_shift/16-shot"]
    assert [r[0].value for r in table.rows] == [0, 16, 16]  # --shots keeps the zero-shot row


def test_few_shot_latex_and_csv(few_shot_dir: Path) -> None:
    df = load_results(few_shot_dir)
    tex = render_table(df, "few-shot", "latex")
    assert "\\toprule" in tex and "\\bottomrule" in tex and tex.count("\\midrule") == 1 + 2  # header, 2 block breaks
    m, s = expected("craft", "digits_noise", 16)
    assert f"\\textbf{{{m:.2f}}} {{\\scriptsize$\\pm${s:.2f}}}" in tex
    craft16 = next(line for line in tex.splitlines() if line.startswith("16 & CraFT"))
    assert craft16.rstrip(" \\").split(" & ")[-2:] == ["--", "--"]
    assert "missing: craft/digits\\_shift/16-shot" in tex

    rows = list(csv.DictReader(io.StringIO(render_table(df, "few-shot", "csv"))))
    craft = next(r for r in rows if r["method"] == "craft" and r["shots"] == "16")
    assert float(craft["digits_noise"]) == pytest.approx(m) and float(craft["digits_noise_std"]) == pytest.approx(s)
    assert craft["digits_shift"] == "" and craft["average"] == ""
    bbt = next(r for r in rows if r["method"] == "bbt" and r["shots"] == "1")
    assert float(bbt["average"]) == pytest.approx(statistics.mean(expected("bbt", d, 1)[0] for d in DIGITS))


def test_datasets_option_orders_and_validates(few_shot_dir: Path) -> None:
    df = load_results(few_shot_dir)
    table = build_table(df, "few-shot", datasets=["digits_shift", "digits_noise"])
    assert [c.key for c in table.columns] == ["shots", "method", "digits_noise", "digits_shift", "average"]
    table = build_table(df, "few-shot", datasets=["builtin"])
    assert [c.key for c in table.columns][2:] == [*DIGITS, "average"]
    with pytest.raises(UserError, match="unknown dataset"):
        build_table(df, "few-shot", datasets=["no_such_set"])


def test_rows_selected_on_test_are_marked_with_a_note(tmp_path: Path) -> None:
    """CBBT's select: best_test reports the epoch best on test: its rows carry a dagger and a note in
    every table of accuracies; the default (last epoch) and other methods carry none."""
    best, last = {"select": "best_test"}, {"select": "last"}
    rows = [row("cbbt", d, 16, s, hparams=best) for d in DIGITS for s in (1, 2)]
    rows += [row("cbbt", d, 1, s, hparams=last) for d in DIGITS for s in (1, 2)]
    rows += [row("craft", d, 16, s, hparams={"sigma": 1.0}) for d in DIGITS for s in (1, 2)]
    rows += [row("cbbt", "imagenet", 16, 1, eval_dataset=t, backbone="RN50", hparams=best) for t in SHIFT]
    df = load_results(write_results(tmp_path, rows))
    few = build_table(df, "few-shot", backbone="craft-tiny")
    assert few.find(method="cbbt", shots=16)["method"].label == "CBBT†"
    assert few.find(method="cbbt", shots=1)["method"].label == "CBBT"
    assert few.find(method="craft", shots=16)["method"].label == "CraFT"
    assert ON_TEST_NOTE in few.notes
    md = render(few, "md")
    assert md_cells(md, "16", "CBBT†") and md_cells(md, "1", "CBBT") and ON_TEST_NOTE in md
    assert "16 & CBBT$^\\dagger$ &" in render(few, "latex")
    assert list(csv.DictReader(io.StringIO(render(few, "csv"))))[0]["method"] in {"cbbt", "craft"}  # keys stay data
    shift = build_table(df, "shift")
    assert shift.find(method="cbbt")["method"].label == "CBBT†" and ON_TEST_NOTE in shift.notes
    paper = build_table(df, "vs-paper")
    assert paper.find(method="cbbt", eval_dataset="imagenet_r")["method"].label == "CBBT†"
    assert paper.find(method="craft", eval_dataset="digits_noise")["method"].label == "CraFT"
    unmarked = build_table(df, "few-shot", backbone="craft-tiny", shots=[1])
    assert ON_TEST_NOTE not in unmarked.notes and "†" not in render(unmarked, "md")


def test_runs_with_fewer_shots_than_asked_are_named_in_a_note(tmp_path: Path) -> None:
    """A class with fewer training images than the shots: the tables name the run and the shots it used."""
    rows = [row("craft", d, 16, s, shots_used=16) for d in DIGITS for s in (1, 2)]
    rows[1]["shots_used"] = 7  # DIGITS[0], seed 2
    rows += [row("bbt", d, 16, 1, shots_used=16) for d in DIGITS]
    df = load_results(write_results(tmp_path, rows))
    for kind in ("few-shot", "vs-paper"):
        note = [n for n in build_table(df, kind).notes if n.startswith("fewer shots than asked")]
        assert note == [f"fewer shots than asked (a class had fewer training images): craft-tiny/craft/{DIGITS[0]}/16-shot used 7"]
        assert note[0] in render(build_table(df, kind), "md")
    full = [r for r in rows if r.get("shots_used") == 16]
    assert not [n for n in build_table(load_results(write_results(tmp_path / "full", full)), "few-shot").notes
                if n.startswith("fewer shots")]


def shift_rows() -> list[dict]:
    rows = []
    for backbone in ("RN50", "ViT-B-16"):
        for method, shots in (("zero_shot_clip", 16), ("coop", 16), ("craft", 16)):
            for seed in (1, 2):
                for target in SHIFT:
                    if (backbone, method, target) == ("ViT-B-16", "coop", "imagenet_a"):
                        continue
                    rows.append(row(method, "imagenet", shots, seed, eval_dataset=target, backbone=backbone))
    return rows


def test_shift_table(tmp_path: Path) -> None:
    df = load_results(write_results(tmp_path, shift_rows()))
    table = build_table(df, "shift")
    assert [c.key for c in table.columns] == ["backbone", "method", *SHIFT, "average"]
    craft = table.find(backbone="RN50", method="craft")
    variants = [statistics.mean(accuracy("craft", t, 16, s) for s in (1, 2)) for t in SHIFT[1:]]
    assert craft["average"].value == pytest.approx(statistics.mean(variants))
    per_seed = [statistics.mean(accuracy("craft", t, 16, s) for t in SHIFT[1:]) for s in (1, 2)]
    assert craft["average"].std == pytest.approx(statistics.stdev(per_seed))
    assert table.find(backbone="ViT-B-16", method="coop")["average"].value is None
    assert table.missing == ["ViT-B-16/coop/imagenet_a/16-shot"]
    best = max(("zero_shot_clip", "coop", "craft"), key=lambda m: accuracy(m, "imagenet_r", 16, 1))
    assert table.find(backbone="RN50", method=best)["imagenet_r"].bold
    md = render(table, "md")
    coop = md_cells(md, "ViT-B-16", "CoOp")
    assert coop[5] == "-" and coop[7] == "-" and "missing: ViT-B-16/coop/imagenet_a/16-shot" in md
    assert "\\midrule\nViT-B-16 & ZS-CLIP" in render(table, "latex")
    assert list(csv.DictReader(io.StringIO(render(table, "csv"))))[0]["backbone"] == "RN50"


def test_a_shift_table_trained_on_another_dataset_shows_its_own_test_sets(tmp_path: Path) -> None:
    evals = ("digits_noise", "digits_rotate", "digits_shift")
    rows = [row(m, "digits_noise", 16, s, eval_dataset=t, backbone="craft-tiny") for m in ("zero_shot_clip", "craft")
            for s in (1, 2) for t in evals]
    rows += [row("craft", "digits_invert", 16, 1, backbone="craft-tiny")]  # a few-shot row: not in the table
    table = build_table(load_results(write_results(tmp_path, rows)), "shift")
    assert [c.key for c in table.columns] == ["backbone", "method", *evals, "average"]
    assert "trained on Digits-Noise" in table.title
    craft = table.find(backbone="craft-tiny", method="craft")
    assert craft["average"].value == pytest.approx(statistics.mean(
        accuracy("craft", t, 16, s) for t in evals[1:] for s in (1, 2)))


def test_vs_paper(tmp_path: Path) -> None:
    rows = [row("craft", "dtd", 16, s, backbone="RN50") for s in (1, 2, 3)]
    rows += [row("zero_shot_clip", "dtd", 16, 1, backbone="RN50")]
    rows += [row("craft", "imagenet", 16, 1, eval_dataset=t, backbone="RN50") for t in ("imagenet", "imagenet_v2")]
    df = load_results(write_results(tmp_path, rows))
    table = build_table(df, "vs-paper")
    craft = table.find(method="craft", eval_dataset="dtd", shots=16)
    ours = statistics.mean(accuracy("craft", "dtd", 16, s) for s in (1, 2, 3))
    assert craft["ours"].value == pytest.approx(ours) and craft["paper"].value == 59.26
    assert craft["delta"].value == pytest.approx(ours - 59.26) and craft["seeds"].value == 3
    zs = table.find(method="zero_shot_clip", eval_dataset="dtd")
    assert zs["shots"].value == 0 and zs["paper"].value == 42.32
    assert table.find(method="craft", eval_dataset="imagenet")["paper"].value == 61.33  # the few-shot table's
    assert table.find(method="craft", eval_dataset="imagenet_v2")["paper"].value == 53.92
    assert table.find(method="craft", eval_dataset="imagenet_a")["ours"].value is None
    assert "RN50/craft/oxford_pets/16-shot" in table.missing and "RN50/craft/imagenet_a/16-shot" in table.missing
    for fmt in ("md", "latex"):
        text = render(table, fmt)
        assert "mrflogs/CraFT" in text
    md = render(table, "md")
    assert md_cells(md, "RN50", "CraFT", "16", "DescribableTextures")[4:] == [
        f"{ours:.2f} ± {statistics.stdev(accuracy('craft', 'dtd', 16, s) for s in (1, 2, 3)):.2f}",
        "3", "59.26", f"{ours - 59.26:+.2f}",
    ]
    csv_rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert set(csv_rows[0]) == {
        "backbone", "method", "shots", "eval_dataset", "ours", "ours_std", "seeds", "paper", "delta"
    }


def test_quickgelu_rows_meet_the_papers_backbone(tmp_path: Path) -> None:
    """open_clip's RN50-quickgelu (OpenAI's RN50 as trained) is the paper's RN50 in every table."""
    rows = [row("craft", "dtd", 16, s, backbone="RN50-quickgelu") for s in (1, 2, 3)]
    df = load_results(write_results(tmp_path, rows))
    table = build_table(df, "vs-paper", backbone="RN50")
    craft = table.find(method="craft", eval_dataset="dtd", shots=16)
    assert craft["paper"].value == 59.26 and craft["seeds"].value == 3
    assert md_cells(render(table, "md"), "RN50", "CraFT", "16", "DescribableTextures")[6] == "59.26"


def test_cost_table(tmp_path: Path) -> None:
    costs = {"coop": (0, 4000.0, 2048), "craft": (8000, 50.0, 200_000), "zero_shot_clip": (0, 30.0, 0)}
    rows = []
    for method, (queries, mem, nbytes) in costs.items():
        for seed in (1, 2):
            extra = dict(queries=queries, peak_mem_mb=mem * seed, learned_bytes=nbytes, learned_params=nbytes // 4,
                         wall_s=10.0 * seed, model_calls=100 * seed, text_sequences=1000, images_encoded=500)
            # One cell evaluated on two datasets: its cost counts once.
            rows += [row(method, "imagenet", 16, seed, eval_dataset=t, backbone="RN50", **extra) for t in SHIFT[:2]]
    df = load_results(write_results(tmp_path, rows))
    table = build_table(df, "cost")
    craft, coop = table.find(method="craft"), table.find(method="coop")
    assert craft["runs"].value == 2 and craft["queries"].value == 8000
    assert craft["peak_mem_mb"].value == pytest.approx(75.0) and craft["wall_s"].value == pytest.approx(15.0)
    assert craft["mem_vs_white_box"].value == pytest.approx(75.0 / 6000.0)
    assert craft["learned_vs_white_box"].value == pytest.approx(200_000 / (6000.0 * 2**20))
    assert coop["mem_vs_white_box"].value == pytest.approx(1.0)
    assert craft["gpu_s"].value is None and "craft/gpu_s" in table.missing
    md = render(table, "md")
    assert md_cells(md, "CraFT")[1:3] == ["2", "8000"] and "0.0125" in md
    assert "1/80" in md and "Mem / CoOp" in render(table, "latex")
    csv_craft = next(r for r in csv.DictReader(io.StringIO(render(table, "csv"))) if r["method"] == "craft")
    assert float(csv_craft["wall_s"]) == 15.0
    without_coop = build_table(df[df["method"] != "coop"], "cost")
    assert "mem_vs_white_box" not in [c.key for c in without_coop.columns]


def test_published_averages() -> None:
    md = render_table(published_results("few-shot"), "few-shot", "md", source=PUBLISHED_SOURCE)
    assert md_cells(md, "16", "CraFT")[-1] == "**71.22**"
    assert md_cells(md, "0", "ZS-CLIP")[-1] == "58.77"
    assert "mrflogs/CraFT" in md
    table = build_table(published_results("few-shot"), "few-shot", backbone="RN50", shots=[16])
    assert len(table.columns) == 2 + 11 + 1 and not table.missing
    shift = build_table(published_results("shift"), "shift", backbone="ViT-B/16")
    assert round(shift.find(method="craft")["average"].value, 2) == 58.80


def test_duplicate_runs_are_an_error(tmp_path: Path) -> None:
    rows = [row("craft", "dtd", 16, 1), {**row("craft", "dtd", 16, 1), "cell_id": "other-hparams"}]
    with pytest.raises(UserError, match="2 runs of craft"):
        build_table(load_results(write_results(tmp_path, rows)), "few-shot")


def test_cli(few_shot_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "t" / "few.tex"
    assert main(["table", str(few_shot_dir), "--kind", "few-shot", "--format", "latex", "--out", str(out)]) == 0
    assert out.read_text().startswith("% needs \\usepackage{booktabs}")
    assert main(["table", "--published", "--kind", "shift", "--format", "csv", "--backbone", "RN50"]) == 0
    assert "RN50,craft,61.17" in capsys.readouterr().out
    assert main(["table", str(tmp_path / "nothing")]) == 2
    assert main(["table", "--published", "--kind", "cost"]) == 2
    assert main(["table", str(few_shot_dir), "--backbone", "RN50"]) == 2
    assert "no results for backbone RN50" in capsys.readouterr().err
