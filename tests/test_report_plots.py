"""Figures: valid PNGs of non-trivial size, the same bytes for the same input, and the Optuna kind."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import optuna
import pytest
from PIL import Image
from test_report_tables import DIGITS, accuracy, row, write_results

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.report.load import load_results
from benchmark.report.plots import plot_optuna, plot_queries, plot_shots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def trace(method: str, dataset: str, shots: int, seed: int) -> list[dict]:
    """Five generations of 40 queries each; test accuracy on every other one, validation always."""
    final = accuracy(method, dataset, shots, seed)
    return [
        {"generation": g, "queries": 40 * (g + 1), "top1_val": final - 4 + g,
         "top1_test": final - 4 + g if g % 2 == 0 else None}
        for g in range(5)
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [row("zero_shot_clip", d, 16, 1, backbone="RN50") for d in ("dtd", "eurosat", DIGITS[0])]
    for method in ("bbt", "craft"):
        for d in ("dtd", "eurosat", DIGITS[0]):
            for shots in (1, 4, 16):
                for seed in (1, 2):
                    if (method, d, shots) != ("craft", "eurosat", 4):
                        rows.append(row(method, d, shots, seed, backbone="RN50", trace=trace(method, d, shots, seed)))
    return write_results(tmp_path_factory.mktemp("plots") / "results", rows)


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size[0] > 300 and image.size[1] > 200


@pytest.mark.parametrize("kind", ["shots", "queries"])
def test_plots_are_valid_and_deterministic(results: Path, tmp_path: Path, kind: str) -> None:
    df = load_results(results)
    plot = plot_shots if kind == "shots" else lambda df, out: plot_queries(df, out, shots=[4, 16])
    first, second = plot(df, tmp_path / "a"), plot(df, tmp_path / "b")
    names = [p.name for p in first]
    assert names == [p.name for p in second]
    assert names == (["shots_RN50.png"] if kind == "shots" else [f"queries_RN50_{k}shot.png" for k in (4, 16)])
    for a, b in zip(first, second):
        check_png(a)
        assert a.read_bytes() == b.read_bytes()


def test_queries_needs_traces(tmp_path: Path) -> None:
    df = load_results(write_results(tmp_path, [row("craft", "dtd", 16, 1)]))
    with pytest.raises(UserError, match="trace"):
        plot_queries(df, tmp_path / "out")


def make_studies(path: Path) -> str:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    sampler = optuna.samplers.RandomSampler(seed=0)
    full = optuna.create_study(study_name="craft-dtd", storage=storage, sampler=sampler, direction="maximize")
    full.optimize(lambda t: t.suggest_float("lr", 1e-4, 1e-1, log=True) * 100 + t.suggest_int("pop", 8, 64), n_trials=8)
    single = optuna.create_study(study_name="bbt-dtd", storage=storage, direction="maximize")
    single.optimize(lambda t: t.suggest_float("sigma", 0.1, 1.0), n_trials=1)
    return str(path)


def test_optuna_history_and_importances(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_studies(tmp_path / "journal.log")
    skipped: list[str] = []
    first = plot_optuna(storage, tmp_path / "a", on_skip=skipped.append)
    assert [p.name for p in first] == [
        "optuna_bbt-dtd_history.png",
        "optuna_craft-dtd_history.png",
        "optuna_craft-dtd_importances.png",
    ]
    assert skipped == ["study bbt-dtd: importances need 2 completed trials with a parameter that varies"]
    for a, b in zip(first, plot_optuna(storage, tmp_path / "b")):
        check_png(a)
        assert a.read_bytes() == b.read_bytes()


def test_plot_cli(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", str(results), "--kind", "shots", "--out", str(tmp_path), "--datasets", "dtd", "eurosat"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "shots_RN50.png")
    assert main(["plot", "--kind", "optuna", "--out", str(tmp_path), "--storage", str(tmp_path / "none.log")]) == 2
    assert main(["plot", "--kind", "queries", "--out", str(tmp_path)]) == 2


def test_shots_legend_says_when_a_method_was_selected_on_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels: list[str] = []
    errorbar = matplotlib.axes.Axes.errorbar

    def spy(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return errorbar(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    rows = [row("cbbt", "dtd", k, s, backbone="RN50", hparams={"select": "best_test"}) for k in (1, 16) for s in (1, 2)]
    rows += [row("bbt", "dtd", k, s, backbone="RN50", hparams={"sigma": 1.0}) for k in (1, 16) for s in (1, 2)]
    plot_shots(load_results(write_results(tmp_path / "results", rows)), tmp_path / "out")
    assert set(labels) == {"CBBT (best on test)", "BBT"}
