"""The published numbers (``benchmark/reference/paper_results.csv``) as results rows."""

from __future__ import annotations

from functools import cache
from importlib import resources

import pandas as pd

from benchmark.errors import UserError
from benchmark.results.backbones import backbone_id

PUBLISHED_SOURCE = (
    "published: CraFT paper (Connecting the Dots: Collaborative Fine-tuning for Black-Box "
    "Vision-Language Models, ICML 2024), exp.log in github.com/mrflogs/CraFT"
)
# Table kinds that have a published counterpart, and the csv's name for it.
PUBLISHED_TABLES = {"few-shot": "few_shot", "shift": "distribution_shift"}


@cache
def _read() -> pd.DataFrame:
    path = resources.files("benchmark").joinpath("reference", "paper_results.csv")
    with path.open(encoding="utf-8") as f:
        raw = pd.read_csv(f)
    return pd.DataFrame(
        {
            "table": raw["table"],
            "status": "ok",
            "method": raw["method"],
            "dataset": raw["train_dataset"],
            "eval_dataset": raw["eval_dataset"],
            "backbone": raw["backbone"].map(backbone_id),  # ViT-B/32 -> ViT-B-32
            "shots": raw["shots"].astype("int64"),
            "seed": float("nan"),
            "top1_test": raw["top1"].astype("float64"),
        }
    )


def published_results(kind: str | None = None) -> pd.DataFrame:
    """Published rows in the results' column names; ``kind`` ('few-shot' or 'shift') picks one table."""
    df = _read()
    if kind is not None:
        if kind not in PUBLISHED_TABLES:
            raise UserError(f"the paper publishes no {kind!r} table; published kinds: {', '.join(PUBLISHED_TABLES)}")
        df = df[df["table"] == PUBLISHED_TABLES[kind]]
    return df.reset_index(drop=True).copy()
