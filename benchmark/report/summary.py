"""A quick Markdown summary of a results folder: mean and std over seeds per dataset, and the average."""

from __future__ import annotations

import pandas as pd

from benchmark.report.load import load_results


def summary_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``method x dataset`` cells of ``mean ± std`` over seeds, with an Average column."""
    df = df[(df["status"] == "ok") & (df["dataset"] == df["eval_dataset"])]
    per = df.groupby(["method", "shots", "dataset"])["top1_test"].agg(["mean", "std", "count"])
    table = per.apply(lambda r: f"{r['mean']:.2f} ± {0.0 if pd.isna(r['std']) else r['std']:.2f}", axis=1).unstack("dataset")
    seed_avg = df.groupby(["method", "shots", "seed"])["top1_test"].mean().groupby(["method", "shots"]).agg(["mean", "std"])
    table["Average"] = seed_avg.apply(lambda r: f"{r['mean']:.2f} ± {0.0 if pd.isna(r['std']) else r['std']:.2f}", axis=1)
    return table


def markdown_summary(out: str, cell_ids: set[str] | None = None) -> str:
    df = load_results(out)
    if cell_ids is not None:
        df = df[df["cell_id"].isin(cell_ids)]
    if df.empty:
        return "(no finished runs)"
    table = summary_frame(df).reset_index()
    header = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("-" if pd.isna(v) else str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)
