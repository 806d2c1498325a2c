"""``craft table A B --kind compare``: two results folders side by side, with deltas and a test of seed noise.

One row per (backbone, method, shots, variant, dataset) found in either folder, plus its Average
over the datasets both have: A's and B's mean ± std over seeds, Δ = B − A, and whether Δ exceeds
seed noise by Welch's t-test (unequal variances, two-sided, p < 0.05) on the per-seed accuracies'
means, stds and counts. Welch rather than a paired test because the two folders need not hold the
same seeds; with fewer than 2 seeds on a side, or no spread on either, there is no test ("n/a").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from benchmark.report.aggregate import average_over, prepare, fewshot_rows, seed_stats, select_datasets
from benchmark.report.labels import backbone_key, dataset_key, dataset_label, method_key
from benchmark.report.tables import (RUN, VARIANT_COLUMN, Column, Table, TableCell, _assemble, _lookup, _method_cell,
                                     _Row, cost_note, has_variants, variant_name)
from benchmark.errors import UserError

ALPHA = 0.05
AVERAGE = "average"


def welch(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """Welch's two-sided p-value for the difference of two means given (mean, std, n) each; NaN where untestable
    (fewer than 2 values on a side, or no spread on either)."""
    (ma, sa, na), (mb, sb, nb) = a, b
    if na < 2 or nb < 2 or math.isnan(sa) or math.isnan(sb) or sa == sb == 0:
        return math.nan
    from scipy.stats import ttest_ind_from_stats

    return float(ttest_ind_from_stats(ma, sa, na, mb, sb, nb, equal_var=False).pvalue)


def build_compare(
    a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str] = ("A", "B"), *, backbone: str | None = None,
    shots: Sequence[int] | None = None, datasets: Sequence[str] | None = None,
    group_by: Sequence[str] | None = None, cost_line: bool = False,
) -> Table:
    """The compare table of results rows ``a`` and ``b`` (each filtered and grouped as
    :func:`~benchmark.report.tables.build_table` does), with each folder's cost line if asked."""
    a, b = (prepare(x, backbone=backbone, shots=shots, group_by=group_by) for x in (a, b))
    table = compare_table(a, b, names, datasets)
    if cost_line:
        table.notes += [f"{name}: {cost_note(rows)}" for name, rows in zip(names, (a, b))]
    return table


def compare_table(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str], datasets: Sequence[str] | None = None) -> Table:
    """A (``a``'s rows) beside B (``b``'s), prepared (:func:`~benchmark.report.aggregate.prepare`); see the module."""
    a, b = fewshot_rows(a), fewshot_rows(b)
    cols = select_datasets(set(a["dataset"]) | set(b["dataset"]), datasets, all_paper=False)
    a, b = a[a["dataset"].isin(cols)], b[b["dataset"].isin(cols)]
    if a.empty or b.empty:
        raise UserError(f"nothing to compare: {names[0] if a.empty else names[1]} has no few-shot results on "
                        f"{', '.join(cols)}")
    stats = [_lookup(seed_stats(x, [*RUN, "dataset"])) for x in (a, b)]
    shared = sorted(set(a["dataset"]) & set(b["dataset"]), key=dataset_key)
    avgs = [_average_stats(x, shared) for x in (a, b)]
    runs = sorted(set(pd.concat([a[RUN], b[RUN]]).drop_duplicates().itertuples(index=False, name=None)),
                  key=lambda r: (backbone_key(r[0]), method_key(r[1]), r[2], r[3]))
    blocks = []
    for run in runs:
        block = []
        for d in [*cols, AVERAGE]:
            found = [(s if d != AVERAGE else avg).get((*run, d) if d != AVERAGE else run) for s, avg in zip(stats, avgs)]
            if found == [None, None]:
                continue
            values = {}
            for side, got in zip(("a", "b"), found):
                if got is not None:
                    values[side] = (got[0], got[1])
                    values[f"n_{side}"] = (got[2], math.nan)
            noise = "-"
            if None not in found:
                values["delta"] = (found[1][0] - found[0][0], math.nan)
                p = welch(found[0], found[1])
                if not math.isnan(p):
                    values["p"] = (p, math.nan)
                noise = "n/a" if math.isnan(p) else ("yes" if p < ALPHA else "no")
            b_, m, k, v = run
            keys = [TableCell(b_), _method_cell(m), TableCell(int(k))] + ([TableCell(v)] if has_variants(a) or has_variants(b) else [])
            keys += [TableCell(d, label="Average" if d == AVERAGE else dataset_label(d))]
            values["beyond_noise"] = (noise, math.nan)  # a text value: its column is not numeric
            block.append(_Row(keys, values, variant_name(f"{b_}/{m}/{d}/{k}-shot", v) + " in {col}"))
        blocks.append(block)
    return _finish(blocks, names, has_variants(a) or has_variants(b), shared)


def _average_stats(rows: pd.DataFrame, shared: list[str]) -> dict[tuple, tuple[float, float, float]]:
    """Per run: the mean over ``shared`` datasets, the std over seeds of each seed's average, and the seeds."""
    out = {}
    if not shared:
        return out
    avg = average_over(rows, RUN, shared, "dataset")
    seeds = rows[rows["dataset"].isin(shared)].groupby(RUN)["seed"].nunique()
    for r in avg.itertuples(index=False, name=None):
        run, mean, std = tuple(r[:4]), r[4], r[5]
        out[run] = (float(mean), float(std), float(seeds.get(run, 0)))
    return out


def _finish(blocks: list[list[_Row]], names: tuple[str, str], variants: bool, shared: list[str]) -> Table:
    key_columns = [Column("backbone", "Backbone", False), Column("method", "Method", False),
                   Column("shots", "Shots", False), *([VARIANT_COLUMN] if variants else []),
                   Column("dataset", "Dataset", False)]
    value_columns = [Column("a", "A"), Column("n_a", "Seeds A", fmt=".0f"), Column("b", "B"),
                     Column("n_b", "Seeds B", fmt=".0f"), Column("delta", "Δ (B − A)", fmt="+.2f"),
                     Column("p", "p (Welch)", fmt=".3f"), Column("beyond_noise", "Beyond noise", False)]
    notes = [f"A: {names[0]}; B: {names[1]}",
             f"Δ: B minus A; Beyond noise: Welch's t-test on the seeds' accuracies (two-sided, unequal variances) gives "
             f"p < {ALPHA}; n/a: fewer than 2 seeds on a side or no spread; Average over the datasets both have"
             + (f" ({', '.join(shared)})" if shared else " (none)")]
    title = "A and B side by side: top-1 accuracy (%), mean ± std over seeds"
    return _assemble(title, key_columns, value_columns, blocks, bold=False, listed={"a", "b"}, notes=notes)
