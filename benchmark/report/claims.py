"""The claims table: each headline claim of the CraFT and CBBT papers, the published figure, ours, and how ours was measured.

The claims are data (``benchmark/reference/claims.csv``); this module measures each one from a
results folder's rows (already :func:`~benchmark.report.aggregate.prepare`'d). A claim whose runs
are absent is "not measured", and its evidence says which runs it needs. Accuracies compare means
over seeds per dataset, averaged over the datasets both sides have; costs compare means over runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import pandas as pd

from benchmark.report.aggregate import fewshot_rows
from benchmark.report.labels import WHITE_BOX, ZERO_SHOT, method_label
from benchmark.report.published import published_results

SHOTS = 16  # every claim is made at 16 shots
OTHER_BLACK_BOX = ("bbt", "bpt_vlm", "blackvip", "lfa")  # what CBBT's paper compares against


@dataclass(frozen=True)
class Claim:
    """One claim: ``ours`` is None when not measured; ``evidence`` says which runs and columns gave it, or which are missing."""

    key: str
    statement: str
    published: float | None
    published_text: str
    unit: str
    ours: float | None
    evidence: str
    source: str


@cache
def _reference() -> pd.DataFrame:
    path = resources.files("benchmark").joinpath("reference", "claims.csv")
    with path.open(encoding="utf-8") as f:
        return pd.read_csv(f, dtype={"published": "float64"}).set_index("claim")


def _published_gain() -> float:
    """CraFT's 16-shot average minus zero-shot's over the paper's 11 datasets (the figure behind "about 12 points")."""
    pub = published_results("few-shot")
    craft = pub[(pub["method"] == "craft") & (pub["shots"] == SHOTS)]["top1_test"].mean()
    return float(craft - pub[pub["method"] == ZERO_SHOT]["top1_test"].mean())


def _per_dataset(rows: pd.DataFrame, method: str) -> pd.Series:
    """Mean test accuracy over seeds per dataset of ``method`` at 16 shots (any shots for zero-shot)."""
    r = rows[rows["method"] == method]
    if method != ZERO_SHOT:
        r = r[r["shots"] == SHOTS]
    return r.groupby("dataset")["top1_test"].mean()


def _runs(rows: pd.DataFrame, method: str) -> pd.DataFrame:
    r = rows[(rows["method"] == method) & (rows["shots"] == SHOTS)]
    return r.drop_duplicates("cell_id") if "cell_id" in r else r


def _seeds(rows: pd.DataFrame, method: str) -> int:
    r = rows[rows["method"] == method]
    return int(r["seed"].nunique()) if "seed" in r else 0


def _accuracy_delta(rows: pd.DataFrame, a: str, b: str) -> tuple[float | None, str]:
    """mean over common datasets of (a - b), and the evidence (datasets, seeds, budget)."""
    pa_, pb = _per_dataset(rows, a), _per_dataset(rows, b)
    common = sorted(set(pa_.index) & set(pb.index))
    if not common:
        need = [m for m, s in ((a, pa_), (b, pb)) if s.empty]
        return None, f"needs {' and '.join(_run_name(m) for m in need or (a, b))} on a common dataset"
    delta = float((pa_[common] - pb[common]).mean())
    budgets = sorted({int(x) for x in _runs(rows, a if a != ZERO_SHOT else b)["budget"].dropna()}) if "budget" in rows else []
    budget = f", budget {'/'.join(map(str, budgets))}" if budgets else ""
    return delta, (f"top1_test, {method_label(a)} minus {method_label(b)}: means over seeds "
                   f"({_seeds(rows, a)} and {_seeds(rows, b)}) per dataset, averaged over {len(common)} "
                   f"dataset(s) ({', '.join(common)}){budget}")


def _run_name(method: str) -> str:
    return f"{method_label(method)} runs" if method == ZERO_SHOT else f"{SHOTS}-shot {method_label(method)} runs"


def _cost_ratio(rows: pd.DataFrame, num: str, den: str, column: str) -> tuple[float | None, str]:
    """mean of ``column`` over ``num``'s 16-shot runs divided by that over ``den``'s, on the datasets both have."""
    rn, rd = _runs(rows, num), _runs(rows, den)
    if column in rows:
        rn, rd = rn[rn[column].notna()], rd[rd[column].notna()]
    common = sorted(set(rn["dataset"]) & set(rd["dataset"])) if column in rows else []
    if not common:
        return None, f"needs {_run_name(num)} and {_run_name(den)} with {column} on a common dataset"
    a = float(rn[rn["dataset"].isin(common)][column].mean())
    b = float(rd[rd["dataset"].isin(common)][column].mean())
    if b <= 0:
        return None, f"{method_label(den)}'s {column} is {b:g}: no ratio"
    return a / b, (f"{column}: mean over {method_label(num)}'s {len(rn[rn['dataset'].isin(common)])} runs "
                   f"({a:.4g}) over {method_label(den)}'s {len(rd[rd['dataset'].isin(common)])} ({b:.4g}), "
                   f"{SHOTS} shots, {len(common)} dataset(s)")


def _deployment_memory(rows: pd.DataFrame) -> tuple[float | None, str]:
    """What CraFT deploys (its learned bytes: prompt and refinement module; the model stays behind the
    black box) over the white-box method's memory (CoOp's training peak, the model held in it), as
    the cost table's ``Learned / CoOp mem``. A run's own ``peak_mem_mb`` would not do: a black-box
    run's counts its model server's (or its process's) memory."""
    rn, rd = _runs(rows, "craft"), _runs(rows, WHITE_BOX)
    if "learned_bytes" in rows and "peak_mem_mb" in rows:
        rn, rd = rn[rn["learned_bytes"].notna()], rd[rd["peak_mem_mb"].notna()]
        common = sorted(set(rn["dataset"]) & set(rd["dataset"]))
    else:
        common = []
    if not common:
        return None, f"needs {_run_name('craft')} with learned_bytes and {_run_name(WHITE_BOX)} with peak_mem_mb on a common dataset"
    rn, rd = rn[rn["dataset"].isin(common)], rd[rd["dataset"].isin(common)]
    a, b = float(rn["learned_bytes"].mean()), float(rd["peak_mem_mb"].mean()) * 2**20
    if b <= 0:
        return None, f"{method_label(WHITE_BOX)}'s peak_mem_mb is 0: no ratio"
    low, high = float(rd["peak_mem_mb"].min()), float(rd["peak_mem_mb"].max())
    spread = f"; {low:.4g} to {high:.4g} over its runs" if high > low else ""
    return a / b, (f"learned_bytes: mean over {method_label('craft')}'s {len(rn)} runs ({a:,.0f} B, what it deploys) over "
                   f"peak_mem_mb: mean over {method_label(WHITE_BOX)}'s {len(rd)} ({b / 2**20:.4g} MiB{spread}), its training "
                   f"peak, process- or device-wide: work beside it in its model server moves it; "
                   f"{SHOTS} shots, {len(common)} dataset(s)")


def measure_claims(df: pd.DataFrame) -> list[Claim]:
    """Every claim of :file:`claims.csv`, measured on ``df`` (prepared results rows)."""
    rows = fewshot_rows(df)
    ref = _reference()
    measured: dict[str, tuple[float | None, str]] = {
        "gain_over_zero_shot": _accuracy_delta(rows, "craft", ZERO_SHOT),
        "gap_to_white_box": _accuracy_delta(rows, WHITE_BOX, "craft"),
        "training_time": _cost_ratio(df, WHITE_BOX, "craft", "wall_s"),  # > 1: CraFT is faster
        "deployment_memory": _deployment_memory(df),
        "cbbt_over_black_box": _cbbt_over_others(rows),
    }
    claims = []
    for key, (ours, evidence) in measured.items():
        r = ref.loc[key]
        published = _published_gain() if key == "gain_over_zero_shot" else (None if pd.isna(r["published"]) else float(r["published"]))
        text = _published_text(key, published)
        claims.append(Claim(key, r["statement"], published, text, r["unit"], ours, evidence, r["source"]))
    return claims


def _cbbt_over_others(rows: pd.DataFrame) -> tuple[float | None, str]:
    """CBBT minus the best other black-box method present (by its mean over datasets)."""
    means = {m: _per_dataset(rows, m) for m in OTHER_BLACK_BOX}
    others = [m for m, per_dataset in means.items() if not per_dataset.empty]
    if not others:
        return None, (f"needs {_run_name('cbbt')} and {SHOTS}-shot runs of another black-box method "
                      f"({', '.join(OTHER_BLACK_BOX)})")
    best = max(others, key=lambda m: float(means[m].mean()))
    value, evidence = _accuracy_delta(rows, "cbbt", best)
    if value is None:
        return value, evidence
    return value, (f"against the best other black-box method present "
                   f"({method_label(best)} of {', '.join(map(method_label, others))}); {evidence}")


def _published_text(key: str, published: float | None) -> str:
    if key == "training_time":
        return "faster"
    if key == "cbbt_over_black_box":
        return "better"
    if key == "deployment_memory" and published is not None:
        return f"1/{1 / published:.0f}"
    return "-" if published is None else f"{published:+.2f}" if key == "gain_over_zero_shot" else f"{published:.2f}"


def ours_text(claim: Claim) -> str:
    """``claim.ours`` as the table shows it."""
    if claim.ours is None:
        return "not measured"
    if claim.key == "training_time":
        return f"{claim.ours:.2f}x"
    if claim.key == "deployment_memory":
        if claim.ours <= 0:
            return "0"
        return f"1/{1 / claim.ours:.1f}" if claim.ours < 1 else f"{claim.ours:.2f}x"
    if claim.key == "gap_to_white_box":
        return f"{claim.ours:.2f}"
    return f"{claim.ours:+.2f}"
