"""From result rows to statistics over seeds: the step that tables and plots share."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence

import pandas as pd

from benchmark.datasets.registry import SUITES, list_datasets
from benchmark.errors import UserError
from benchmark.report.labels import ZERO_SHOT, backbone_key, dataset_key, paper_datasets
from benchmark.results.backbones import backbone_id
from benchmark.results.schema import selected_on_test

RUN_KEYS = ["method", "backbone", "dataset", "eval_dataset", "shots", "seed", "variant"]
ON_TEST = "on_test"  # the column :func:`prepare` adds: the row's accuracy is its best epoch's on test
VARIANT = "variant"  # the column :func:`prepare` adds: the row's values of ``--group-by`` (``budget=2000``), else ""
HPARAMS_PREFIX = "hparams."


def with_hparam_columns(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a column ``hparams.KEY`` per hyperparameter in its rows' ``hparams`` JSON (null where a row
    lacks it), so that ``--where`` and ``--group-by`` can name them; lists and dicts as JSON text."""
    if "hparams" not in df or df.empty:
        return df
    parsed = [json.loads(h) if isinstance(h, str) else (h if isinstance(h, dict) else {}) for h in df["hparams"]]
    keys = sorted({k for h in parsed for k in h})
    flat = {f"{HPARAMS_PREFIX}{k}": [_scalar(h.get(k)) for h in parsed] for k in keys}
    return df.assign(**flat)


def _scalar(value: object) -> object:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def where(df: pd.DataFrame, expr: str | None) -> pd.DataFrame:
    """Rows of ``df`` (with :func:`with_hparam_columns`) for which the pandas query ``expr`` holds
    (``budget > 1000``, ```hparams.sigma` == 0.5``); a bad expression is a UserError naming it."""
    if not expr:
        return df
    df = with_hparam_columns(df)
    try:
        kept = df.query(expr, engine="python")
    except Exception as exc:  # noqa: BLE001 - pandas raises anything from a user's expression
        hint = " (name hparams.KEY in backticks: `hparams.sigma` == 0.5)" if HPARAMS_PREFIX in expr else ""
        raise UserError(f"--where {expr!r} is not a query over the result columns: "
                        f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}{hint}") from None
    if kept.empty:
        raise UserError(f"--where {expr!r} keeps none of the {len(df)} result rows")
    return kept


def add_variant(df: pd.DataFrame, group_by: Sequence[str] | None) -> pd.DataFrame:
    """``df`` with :data:`VARIANT`: ``key=value, ...`` of the ``group_by`` columns (``hparams.KEY`` from the
    hyperparameters), so that runs differing in them are rows of their own; "" without ``group_by``."""
    if not group_by:
        return df.assign(**{VARIANT: ""})
    df = with_hparam_columns(df)
    unknown = [k for k in group_by if k not in df.columns]
    if unknown:
        hp = sorted(c for c in df.columns if c.startswith(HPARAMS_PREFIX))
        other = sorted(c for c in df.columns if not c.startswith(HPARAMS_PREFIX) and c != "hparams")
        raise UserError(f"--group-by {unknown[0]}: no such column in the results; columns: {', '.join(other)}"
                        + (f"; hyperparameters: {', '.join(hp)}" if hp else ""))
    parts = [df[k].map(lambda v, k=k: f"{k.removeprefix(HPARAMS_PREFIX)}={_show(v)}") for k in group_by]
    variant = parts[0]
    for p in parts[1:]:
        variant = variant + ", " + p
    return df.assign(**{VARIANT: variant})


def _show(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def prepare(
    df: pd.DataFrame, *, backbone: str | None = None, shots: Sequence[int] | None = None,
    group_by: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Keep ``ok`` rows, filter, check one run per cell (and variant), and put zero-shot rows at shots 0
    (they learn nothing).

    Adds :data:`ON_TEST`: whether the row reports the epoch best on test (:func:`selected_on_test`), and
    :data:`VARIANT` (:func:`add_variant`). Backbones become their :func:`backbone_id` (``RN50-quickgelu``
    is the paper's ``RN50``).
    """
    if "status" in df:
        df = df[df["status"] == "ok"]
    df = add_variant(df, group_by)
    on_test = df["hparams"].map(selected_on_test).astype(bool) if "hparams" in df else False
    df = df.assign(backbone=df["backbone"].map(backbone_id), **{ON_TEST: on_test})
    if backbone is not None:
        wanted = backbone_id(backbone)
        if wanted not in set(df["backbone"]):
            raise UserError(f"no results for backbone {backbone}; present: {', '.join(sorted_backbones(df))}")
        df = df[df["backbone"] == wanted]
    zero = df["method"] == ZERO_SHOT
    if shots:
        if not df.loc[~zero, "shots"].isin(shots).any():
            present = sorted(int(s) for s in df.loc[~zero, "shots"].unique())
            raise UserError(f"no results with shots {', '.join(map(str, shots))}; present: {present}")
        df = df[zero | df["shots"].isin(shots)]
        zero = df["method"] == ZERO_SHOT
    _check_one_run_per_cell(df)
    df = df.assign(shots=df["shots"].where(~zero, 0).astype("int64"))
    if df.empty:
        raise UserError("no successful results to report")
    return df.reset_index(drop=True)


def _check_one_run_per_cell(df: pd.DataFrame) -> None:
    dup = df[df.duplicated(RUN_KEYS, keep=False)]
    if not dup.empty:
        r = dup.iloc[0]
        n = int((dup[RUN_KEYS] == r[RUN_KEYS]).all(axis=1).sum())
        differ = _differing(dup[(dup[RUN_KEYS] == r[RUN_KEYS]).all(axis=1)])
        raise UserError(
            f"the results hold {n} runs of {r['method']} on {r['backbone']}, {r['dataset']} -> {r['eval_dataset']}, "
            f"{r['shots']} shots, seed {r['seed']}{' ' + r[VARIANT] if r[VARIANT] else ''}"
            + (f" differing in {', '.join(differ[:4])}" if differ else "")
            + f"; render one row per variant with --group-by {differ[0] if differ else 'hparams.KEY'}, "
            "or keep one with --where"
        )


def _differing(runs: pd.DataFrame) -> list[str]:
    """The columns (``budget``, ``hparams.KEY``, server options...) in which ``runs`` of one cell differ."""
    runs = with_hparam_columns(runs)
    skip = {"cell_id", "hparams", "trace", "config", "config_hash", "started_at", "finished_at", "packages", "host",
            "error", ON_TEST, VARIANT} | {c for c in runs.columns if c.startswith("top1_")}
    metrics = {"queries", "unbudgeted_queries", "text_sequences", "images_encoded", "model_calls", "learned_params",
               "learned_bytes", "wall_s", "gpu_s", "peak_mem_mb", "shots_used"}
    cols = [c for c in runs.columns if c not in skip and c not in metrics]
    return [c for c in cols if runs[c].astype(str).nunique(dropna=False) > 1]


def sorted_backbones(df: pd.DataFrame) -> list[str]:
    return sorted(df["backbone"].unique(), key=backbone_key)


def fewshot_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows measured on the dataset the run trained on (not the ImageNet variants), with a test accuracy."""
    return df[(df["dataset"] == df["eval_dataset"]) & df["top1_test"].notna()]


def select_datasets(
    present: Iterable[str], requested: Sequence[str] | None = None, *, all_paper: bool = True
) -> list[str]:
    """Dataset columns: ``requested`` (keys or suite names), else those present, with all of the paper's 11
    when any of them is present and ``all_paper`` (so a table shows the missing ones).

    Known datasets follow the paper's then the registry's order, others are alphabetical.
    """
    present = set(present)
    if requested:
        chosen: list[str] = []
        for name in requested:
            if name in SUITES:
                chosen += [s.key for s in list_datasets(name) if not s.test_only]
            elif name in present or dataset_key(name)[0] < 2:
                chosen.append(name)
            else:
                raise UserError(f"unknown dataset {name!r}: neither in the results nor in the registry, nor a suite")
        return sorted(set(chosen), key=dataset_key)
    paper = paper_datasets() if all_paper and present & set(paper_datasets()) else []
    return paper + sorted(present - set(paper), key=dataset_key)


def seed_stats(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Per group of ``keys``: mean, sample std (NaN for one value) and count of ``top1_test``."""
    return rows.groupby(keys, sort=False)["top1_test"].agg(mean="mean", std="std", n="count").reset_index()


def average_over(rows: pd.DataFrame, keys: list[str], datasets: Sequence[str], column: str) -> pd.DataFrame:
    """Per group of ``keys`` having every one of ``datasets`` (in ``column``): the mean of the per-dataset means.

    Its std is over seeds of each seed's average, given only when every seed has every dataset.
    Groups missing a dataset are left out: an average is never taken over fewer datasets.
    """
    out = []
    for key, g in rows[rows[column].isin(datasets)].groupby(keys, sort=False):
        means = g.groupby(column)["top1_test"].mean()
        if len(means) < len(datasets):
            continue
        per_seed = g.pivot_table(index="seed", columns=column, values="top1_test", aggfunc="mean")
        complete = per_seed.shape[1] == len(datasets) and not per_seed.isna().to_numpy().any()
        std = float(per_seed.mean(axis=1).std()) if complete and len(per_seed) >= 2 else math.nan
        out.append((*key, float(means.mean()), std))
    return pd.DataFrame(out, columns=[*keys, "mean", "std"])


def describe_run(method: str, dataset: str, shots: int, backbone: str | None = None) -> str:
    """How a missing cell is listed: ``craft/dtd/16-shot`` (``RN50/craft/...`` when backbones differ)."""
    return f"{backbone + '/' if backbone else ''}{method}/{dataset}/{shots}-shot"


def marked_on_test(rows: pd.DataFrame, keys: list[str]) -> set[tuple]:
    """The groups of ``keys`` (from :func:`prepare`'d rows) holding a row selected on test."""
    return set(rows.loc[rows[ON_TEST], keys].itertuples(index=False, name=None))
