"""The paper's figures as PNG, PDF or SVG files: accuracy versus shots, the anytime curves, and Optuna studies.

Figures are drawn on Agg in one paper style (:func:`_style`: matplotlib's defaults, then 8-9 pt
sans-serif text, thin axes, and the Okabe-Ito palette, which colour-blind readers tell apart), at a
fixed size, PNG at print resolution (:data:`DPI`), PDF with TrueType fonts (editable, accepted by
journals), SVG with text as paths; in sorted order and without the software stamp or dates, so the
same input gives the same bytes.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmark.errors import UserError
from benchmark.report.aggregate import (average_over, fewshot_rows, marked_on_test, prepare, seed_stats,
                                        select_datasets, sorted_backbones)
from benchmark.report.labels import ZERO_SHOT, backbone_key, dataset_label, method_key, method_label
from benchmark.report.published import published_results

KINDS = ("shots", "queries", "optuna")
FORMATS = ("png", "pdf", "svg")
DPI = 300  # print resolution for PNG (PDF and SVG are vector)
PANEL = (3.2, 2.6)  # inches per panel
TOP, BOTTOM = 0.7, 0.9  # inches above the panels (title) and below them (axis labels, legend)
NCOLS = 4
METADATA = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
            "svg": {"Creator": None, "Date": None}}
# Okabe & Ito (2008), "Color universal design": told apart with any colour-vision deficiency. Black first
# (zero-shot comes first in method order), yellow last (faint on white).
PALETTE = ("#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#F0E442")
PAPER_RC = {
    "font.family": "sans-serif", "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "legend.fontsize": 8, "axes.linewidth": 0.6, "lines.linewidth": 1.2,
    "axes.spines.top": False, "axes.spines.right": False, "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "pdf.fonttype": 42, "svg.fonttype": "path", "svg.hashsalt": "craft-bench",
}
AVERAGE = "average"


def plot_shots(
    df: pd.DataFrame, out_dir: str | Path, *, datasets: Sequence[str] | None = None, backbone: str | None = None,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Accuracy versus shots, one panel per dataset plus Average, one figure per backbone and format
    (``shots_<backbone>.<format>``, ``formats`` among :data:`FORMATS`).

    Lines: mean over seeds with std error bars and a ±std band; zero-shot as a dashed level; the published numbers
    as hollow markers where the paper has the dataset and backbone.
    """
    rows = fewshot_rows(prepare(df, backbone=backbone))
    cols = select_datasets(rows["dataset"].unique(), datasets, all_paper=False)
    rows = rows[rows["dataset"].isin(cols)]
    if rows.empty:
        raise UserError(f"no few-shot results on {', '.join(cols)}")
    paper = published_results("few-shot")
    written = []
    for b in sorted_backbones(rows):
        ours = rows[rows["backbone"] == b]
        pub = paper[(paper["backbone"] == b) & paper["dataset"].isin(cols)]
        stats = seed_stats(ours, ["method", "shots", "dataset"])
        stats = pd.concat([stats, average_over(ours, ["method", "shots"], cols, "dataset").assign(dataset=AVERAGE)])
        pub_avg = average_over(pub, ["method", "shots"], cols, "dataset").assign(dataset=AVERAGE)
        pub = pd.concat([pub.rename(columns={"top1_test": "mean"}), pub_avg])
        xs = sorted({int(k) for k in pd.concat([stats["shots"], pub["shots"]]) if k > 0})
        methods = sorted(set(stats["method"]) | set(pub["method"]), key=method_key)
        on_test = {m for (m,) in marked_on_test(ours, ["method"])}
        with _style():
            fig, axes = _grid(len(cols) + 1)
            for ax, d in zip(axes, [*cols, AVERAGE]):
                for m in methods:
                    _shots_panel(ax, stats[(stats["dataset"] == d) & (stats["method"] == m)],
                                 pub[(pub["dataset"] == d) & (pub["method"] == m)], xs, m, _color(m, methods),
                                 m in on_test)
                ax.set_title(f"Average ({len(cols)} datasets)" if d == AVERAGE else dataset_label(d), fontsize=9)
                ax.set_xticks(range(len(xs)), [str(x) for x in xs])
                ax.set_xlabel("shots per class", fontsize=8)
                ax.set_ylabel("top-1 (%)", fontsize=8)
            written += _save(fig, Path(out_dir) / f"shots_{_slug(b)}", f"Accuracy versus shots ({b})", formats)
    return written


def _shots_panel(ax, ours: pd.DataFrame, pub: pd.DataFrame, xs: list[int], method: str, color,
                 on_test: bool = False) -> None:
    """``on_test``: some of ours report the epoch best on test (CBBT's ``select: best_test``): the label says so."""
    label = method_label(method)
    if method == ZERO_SHOT:
        for mean in ours["mean"]:
            ax.axhline(mean, color=color, linestyle="--", linewidth=1, label=label)
        for mean in pub["mean"]:
            ax.plot(range(len(xs)), [mean] * len(xs), linestyle="none", marker="D", mfc="none", mec=color,
                    markersize=4, label=f"{label} (paper)")
        return
    ours = ours.sort_values("shots")
    if not ours.empty:
        x = [xs.index(k) for k in ours["shots"]]
        std = ours["std"].fillna(0)
        ax.fill_between(x, ours["mean"] - std, ours["mean"] + std, color=color, alpha=0.15, linewidth=0)
        ax.errorbar([xs.index(k) for k in ours["shots"]], ours["mean"], yerr=ours["std"].fillna(0), color=color,
                    marker="o", markersize=3, capsize=2, linewidth=1.2, label=label + (" (best on test)" if on_test else ""))
    pub = pub.sort_values("shots")
    if not pub.empty:
        ax.plot([xs.index(k) for k in pub["shots"]], pub["mean"], linestyle="none", marker="D", mfc="none", mec=color,
                markersize=5, label=f"{label} (paper)")


def plot_queries(
    df: pd.DataFrame,
    out_dir: str | Path,
    *,
    datasets: Sequence[str] | None = None,
    backbone: str | None = None,
    shots: Sequence[int] | None = None,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Accuracy versus queries used, from each run's trace: one figure per backbone, shots and format, one panel
    per dataset.

    A trace point counts its test accuracy, or its validation accuracy where test was not evaluated.
    Lines: mean over seeds; band: min to max over seeds; zero-shot as a dashed level.
    """
    rows = fewshot_rows(prepare(df, backbone=backbone, shots=shots))
    points = _trace_points(rows[rows["method"] != ZERO_SHOT])
    if points.empty:
        raise UserError("no run in the results has a trace with accuracies")
    zero = seed_stats(rows[rows["method"] == ZERO_SHOT], ["backbone", "dataset"])
    written = []
    for (b, k), group in sorted(points.groupby(["backbone", "shots"]), key=lambda g: (backbone_key(g[0][0]), g[0][1])):
        cols = select_datasets(group["dataset"].unique(), datasets, all_paper=False)
        methods = sorted(set(group["method"]) | ({ZERO_SHOT} if not zero.empty else set()), key=method_key)
        with _style():
            fig, axes = _grid(len(cols))
            for ax, d in zip(axes, cols):
                for m in methods:
                    _queries_panel(ax, group[(group["dataset"] == d) & (group["method"] == m)],
                                   zero[(zero["backbone"] == b) & (zero["dataset"] == d)], m, _color(m, methods))
                ax.set_title(dataset_label(d), fontsize=9)
                ax.set_xlabel("queries", fontsize=8)
                ax.set_ylabel("top-1 (%)", fontsize=8)
            title = f"Accuracy versus queries ({b}, {k} shots; test, or validation where test was not evaluated)"
            written += _save(fig, Path(out_dir) / f"queries_{_slug(b)}_{k}shot", title, formats)
    return written


def _queries_panel(ax, points: pd.DataFrame, zero: pd.DataFrame, method: str, color) -> None:
    if method == ZERO_SHOT:
        for mean in zero["mean"]:
            ax.axhline(mean, color=color, linestyle="--", linewidth=1, label=method_label(method))
        return
    curve = points.groupby("queries")["top1"].agg(["mean", "min", "max"]).sort_index()
    if not curve.empty:
        ax.plot(curve.index, curve["mean"], color=color, linewidth=1.2, label=method_label(method))
        ax.fill_between(curve.index, curve["min"], curve["max"], color=color, alpha=0.2, linewidth=0)


def _trace_points(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trace entry with an accuracy: backbone, method, shots, dataset, queries, top1."""
    out = []
    for r in rows.itertuples(index=False):
        for t in r.trace if r.trace is not None else []:
            acc = t["top1_test"] if _present(t["top1_test"]) else t["top1_val"]
            if _present(acc) and _present(t["queries"]):
                out.append((r.backbone, r.method, int(r.shots), r.dataset, int(t["queries"]), float(acc)))
    return pd.DataFrame(out, columns=["backbone", "method", "shots", "dataset", "queries", "top1"])


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def plot_optuna(storage: str, out_dir: str | Path, *, on_skip: Callable[[str], None] | None = None,
                formats: Sequence[str] = ("png",)) -> list[Path]:
    """Optimisation history and parameter importances of each study in ``storage``.

    ``storage`` is a JournalFileStorage file or an RDB URL. Importances need two completed trials
    with a parameter that varies; a study without them (or without any completed trial) is
    skipped and ``on_skip`` gets the reason.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.visualization import matplotlib as ov

    store = _open_storage(storage)
    names = sorted(optuna.get_all_study_names(storage=store))
    if not names:
        raise UserError(f"no Optuna studies in {storage}")
    skip = on_skip or (lambda message: None)
    written = []
    for name in names:
        study = optuna.load_study(study_name=name, storage=store)
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not done:
            skip(f"study {name}: no completed trial")
            continue
        target = {}
        if len(study.directions) > 1:
            target = {"target": lambda t: t.values[0], "target_name": "objective 0"}
        with warnings.catch_warnings(), _style():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            ax = ov.plot_optimization_history(study, **target)
            ax.set_title(f"{ax.get_title()}: {name}")
            written += _save_pyplot(ax.figure, Path(out_dir) / f"optuna_{_slug(name)}_history", formats)
            params = {k for t in done for k in t.params}
            varies = any(len({repr(t.params.get(p)) for t in done}) > 1 for p in params)
            if len(done) < 2 or not varies:
                skip(f"study {name}: importances need 2 completed trials with a parameter that varies")
                continue
            ax = ov.plot_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), **target)
            ax.set_title(f"{ax.get_title()}: {name}")
            written += _save_pyplot(ax.figure, Path(out_dir) / f"optuna_{_slug(name)}_importances", formats)
    return written


def _open_storage(storage: str):
    """An Optuna storage: an RDB URL as is, a file path as a JournalFileStorage."""
    if "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not Path(storage).is_file():
        raise UserError(f"no Optuna journal file at {storage} (pass a JournalFileStorage path or an RDB URL)")
    try:
        return JournalStorage(JournalFileBackend(storage))  # replays the journal: a damaged line fails here
    except ValueError as exc:  # json.JSONDecodeError, or a record Optuna does not know
        raise UserError(f"Optuna journal {storage} cannot be read: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}") from None


@contextmanager
def _style() -> Iterator[None]:
    """The paper style (:data:`PAPER_RC` over matplotlib's defaults) whatever the user's matplotlibrc, restored afterwards."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(PAPER_RC)
        yield


def _grid(n: int) -> tuple[Figure, list]:
    """A figure with ``n`` panels in rows of :data:`NCOLS` (unused cells hidden), at a fixed size and layout.

    The margins are fixed (no layout engine): one draw per save, and room for the title and legend.
    """
    ncols = min(n, NCOLS)
    nrows = math.ceil(n / ncols)
    width, height = PANEL[0] * ncols, PANEL[1] * nrows + TOP + BOTTOM
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.6 / width, right=1 - 0.15 / width, top=1 - TOP / height, bottom=BOTTOM / height,
                        wspace=0.35, hspace=0.6)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, linewidth=0.5)
    return fig, axes[:n]


def check_formats(formats: Sequence[str]) -> list[str]:
    """``formats`` checked against :data:`FORMATS` (UserError naming the first other one), duplicates dropped."""
    for f in formats:
        if f not in FORMATS:
            raise UserError(f"--format {f!r}: expected one or more of {', '.join(FORMATS)} (comma-separated)")
    return list(dict.fromkeys(formats))


def _write(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """``stem.<format>`` for each format, PNG at :data:`DPI`, no software stamp or date."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in check_formats(formats):
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=DPI, metadata=METADATA[fmt])
        written.append(path)
    return written


def _save(fig: Figure, stem: Path, title: str, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Title, one legend for all panels (labels in first-seen order), and the files (:func:`_write`)."""
    handles: dict[str, object] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    # 10 pt, smaller where a narrow figure (one or two panels) would cut a long title (about 0.55 em a character)
    size = min(10.0, 0.95 * fig.get_figwidth() * 72 / (0.55 * max(len(title), 1)))
    fig.suptitle(title, fontsize=size, y=1 - 0.15 / fig.get_figheight())
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", ncols=min(len(handles), 6),
                   fontsize=8, frameon=False)
    return _write(fig, stem, formats)


def _save_pyplot(fig: Figure, stem: Path, formats: Sequence[str] = ("png",)) -> list[Path]:
    """Save a figure that Optuna drew through pyplot at the fixed size, then close it."""
    import matplotlib.pyplot as plt

    fig.set_size_inches(8, 5)
    fig.tight_layout()
    try:
        return _write(fig, stem, formats)
    finally:
        plt.close(fig)


def _color(method: str, methods: list[str]):
    """The same colour for a method in every panel of a figure (Okabe-Ito, :data:`PALETTE`)."""
    return PALETTE[methods.index(method) % len(PALETTE)]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)
