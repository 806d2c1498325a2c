"""From result rows to statistics over seeds: the step that tables and plots share."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from benchmark.datasets.registry import SUITES, list_datasets
from benchmark.errors import UserError
from benchmark.report.labels import ZERO_SHOT, backbone_key, dataset_key, paper_datasets
from benchmark.results.backbones import backbone_id
from benchmark.results.schema import selected_on_test

RUN_KEYS = ["method", "backbone", "dataset", "eval_dataset", "shots", "seed"]
ON_TEST = "on_test"  # the column :func:`prepare` adds: the row's accuracy is its best epoch's on test


def prepare(df: pd.DataFrame, *, backbone: str | None = None, shots: Sequence[int] | None = None) -> pd.DataFrame:
    """Keep ``ok`` rows, filter, check one run per cell, and put zero-shot rows at shots 0 (they learn nothing).

    Adds :data:`ON_TEST`: whether the row reports the epoch best on test (:func:`selected_on_test`).
    Backbones become their :func:`backbone_id` (``RN50-quickgelu`` is the paper's ``RN50``).
    """
    if "status" in df:
        df = df[df["status"] == "ok"]
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
        raise UserError(
            f"the results hold {n} runs of {r['method']} on {r['backbone']}, {r['dataset']} -> {r['eval_dataset']}, "
            f"{r['shots']} shots, seed {r['seed']} (different hyperparameters or budgets?); "
            "point at a folder with one run per cell"
        )


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
