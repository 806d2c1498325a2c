"""The paper's tables as a table model, built by pure functions from a results DataFrame.

A :class:`Table` holds cells, not text: ``render.py`` turns it into Markdown, LaTeX or CSV.
A cell without data is ``TableCell(None)`` (a dash) and is named in ``Table.missing``; an average
over datasets is a dash as soon as one of its datasets is missing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from benchmark.datasets.registry import list_datasets
from benchmark.errors import UserError
from benchmark.report.aggregate import (VARIANT, average_over, describe_run, fewshot_rows, marked_on_test, prepare,
                                        seed_stats, select_datasets, sorted_backbones)
from benchmark.report.claims import measure_claims, ours_text
from benchmark.report.labels import WHITE_BOX, backbone_key, dataset_key, dataset_label, method_key, method_label
from benchmark.report.published import PUBLISHED_SOURCE, published_results

KINDS = ("few-shot", "shift", "vs-paper", "cost", "claims", "compare")
RUN = ["backbone", "method", "shots", VARIANT]  # what one row of a table is: a run over seeds (and datasets)
SHIFT_SOURCE = "imagenet"
COL = "{col}"  # placeholder for the column's key in a row's name, for the missing list
ON_TEST_MARK = "†"
ON_TEST_NOTE = (
    "†: the best epoch on the test set (CBBT's official selection, select: best_test), not the last: "
    "a number chosen on test"
)


@dataclass(frozen=True)
class Column:
    """A column: ``key`` names it in CSV, ``label`` in Markdown and LaTeX; ``fmt`` formats its numbers."""

    key: str
    label: str
    numeric: bool = True
    fmt: str = ".2f"


VARIANT_COLUMN = Column(VARIANT, "Variant", False)


@dataclass(frozen=True)
class TableCell:
    """A value (None: missing), its std over seeds, whether it is the best of its block; ``label`` displays a key."""

    value: float | int | str | None = None
    std: float | None = None
    bold: bool = False
    label: str | None = None


@dataclass
class Table:
    """Rows of cells under columns; ``breaks`` are row indices that start a new block (a rule in LaTeX)."""

    title: str
    columns: list[Column]
    rows: list[list[TableCell]]
    breaks: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def find(self, **keys: object) -> dict[str, TableCell]:
        """The one row whose key cells hold ``keys`` (e.g. ``method="craft", shots=16``), by column key."""
        found = [
            dict(zip((c.key for c in self.columns), row))
            for row in self.rows
            if all(cell.value == keys[c.key] for c, cell in zip(self.columns, row) if c.key in keys)
        ]
        if len(found) != 1:
            raise KeyError(f"{len(found)} rows match {keys}")
        return found[0]


@dataclass
class _Row:
    keys: list[TableCell]
    values: dict[str, tuple[float, float]]  # column key -> (mean, std)
    name: str  # how a missing cell of this row is listed; COL stands for the column's key


def build_table(
    df: pd.DataFrame,
    kind: str,
    *,
    backbone: str | None = None,
    shots: Sequence[int] | None = None,
    datasets: Sequence[str] | None = None,
    source: str | None = None,
    group_by: Sequence[str] | None = None,
    cost_line: bool = False,
) -> Table:
    """Table ``kind`` (one of :data:`KINDS`) from results rows; ``source`` is named under it.

    ``group_by``: columns (``budget``, ``hparams.KEY``, ``precision``...) whose values make runs of one
    method variants, each a row of its own (:func:`~benchmark.report.aggregate.add_variant`).
    ``cost_line``: end with what the runs cost (:func:`cost_note`). ``compare`` takes two folders:
    :func:`benchmark.report.compare.build_compare`.
    """
    if kind not in KINDS:
        raise UserError(f"unknown table kind {kind!r}; kinds: {', '.join(KINDS)}")
    df = prepare(df, backbone=backbone, shots=shots, group_by=group_by)
    if kind == "compare":  # two folders: benchmark.report.compare builds it (it imports this module)
        raise UserError("--kind compare needs two results folders: craft table A B --kind compare")
    if kind == "few-shot":
        table = few_shot_table(df, datasets)
    elif kind == "shift":
        table = shift_table(df)
    elif kind == "vs-paper":
        table = vs_paper_table(df, published_results(), datasets)
    elif kind == "claims":
        table = claims_table(df, datasets)
    else:
        table = cost_table(df, datasets)
    if source:
        table.notes.append(source)
    if cost_line:
        table.notes.append(cost_note(df))
    return table


def cost_note(rows: pd.DataFrame) -> str:
    """One line of what the runs in ``rows`` cost, from what they record: runs, queries, wall and GPU hours
    (each sum over the runs that record it, with how many do)."""
    runs = rows.drop_duplicates("cell_id") if "cell_id" in rows and rows["cell_id"].notna().all() else rows
    parts = [f"cost: {len(runs)} runs"]
    for column, name, scale, fmt in (("queries", "queries", 1, ",.0f"), ("images_encoded", "images encoded", 1, ",.0f"),
                                     ("query_images", "query images", 1, ",.0f"), ("wall_s", "wall hours", 3600, ".3f"),
                                     ("gpu_s", "GPU hours", 3600, ".3f")):
        have = runs[column].dropna() if column in runs else pd.Series(dtype=float)
        if column == "query_images" and not (have > 0).any():
            continue  # text-side methods only: no image-side queries to count
        if have.empty:
            parts.append(f"{name}: not recorded")
            continue
        parts.append(f"{format(have.sum() / scale, fmt)} {name}" + ("" if len(have) == len(runs) else f" ({len(have)} of {len(runs)} runs record it)"))
    return ", ".join(parts)


def few_shot_table(df: pd.DataFrame, datasets: Sequence[str] | None = None) -> Table:
    """Methods x datasets plus Average, one block per (backbone, shots); zero-shot once, at shots 0."""
    rows = fewshot_rows(df)
    cols = select_datasets(rows["dataset"].unique(), datasets)
    rows = rows[rows["dataset"].isin(cols)]
    if rows.empty:
        raise UserError(f"no few-shot results (rows with eval_dataset == dataset) on {', '.join(cols)}")
    stats, avg, on_test = _run_stats(rows, "dataset", cols)
    backbones = sorted_backbones(rows)
    multi = len(backbones) > 1
    variants = has_variants(rows)
    blocks, fewer = [], []
    for b in backbones:
        combos = rows.loc[rows["backbone"] == b, ["shots", "method", VARIANT]].drop_duplicates()
        for k in sorted(combos["shots"].unique()):
            block = []
            at_k = combos.loc[combos["shots"] == k, ["method", VARIANT]].itertuples(index=False, name=None)
            for m, v in sorted(at_k, key=lambda mv: (method_key(mv[0]), mv[1])):
                name = variant_name(describe_run(m, COL, k, b if multi else None), v)
                keys_cells = [TableCell(b)] if multi else []
                keys_cells += [TableCell(int(k)), _method_cell(m, (b, m, k, v) in on_test)]
                keys_cells += [TableCell(v)] if variants else []
                block.append(_averaged_row(stats, avg, (b, m, k, v), cols, keys_cells, name, fewer))
            blocks.append(block)
    key_columns = ([Column("backbone", "Backbone", False)] if multi else []) + [
        Column("shots", "Shots", False),
        Column("method", "Method", False),
    ] + ([VARIANT_COLUMN] if variants else [])
    where = f" on {backbones[0]}" if not multi else ""
    title = (
        f"Few-shot top-1 accuracy (%){where}{_OVER_SEEDS if _has_std(stats) else ''}; "
        f"Average over the {len(cols)} datasets; bold: best per column at equal shots"
    )
    return _averaged_table(title, key_columns, cols, blocks, rows, fewer, on_test)


def shift_source(df: pd.DataFrame) -> tuple[str, list[str]]:
    """The dataset a shift table is trained on and the test sets it shows (the source first).

    ImageNet and its four variants when the rows hold them (the paper's table); else the one dataset
    whose runs were also scored on other test sets (``eval_datasets``, e.g. the built-in suite's).
    """
    cross = df[(df["dataset"] != df["eval_dataset"]) & df["top1_test"].notna()]
    sources = sorted(cross["dataset"].unique(), key=dataset_key)
    if not sources or SHIFT_SOURCE in sources:
        return SHIFT_SOURCE, [s.key for s in list_datasets("imagenet_shift")]
    if len(sources) > 1:
        raise UserError(f"shift results trained on {len(sources)} datasets ({', '.join(sources)}); pick one with "
                        f"--where \"dataset == '{sources[0]}'\"")
    evals = cross.loc[cross["dataset"] == sources[0], "eval_dataset"].unique()
    return sources[0], [sources[0], *sorted(evals, key=dataset_key)]


def shift_table(df: pd.DataFrame) -> Table:
    """Trained on one dataset (ImageNet in the paper), evaluated on it and its shifted variants, with the
    average over the variants; per backbone."""
    source, targets = shift_source(df)
    variants = [t for t in targets if t != source]
    rows = df[(df["dataset"] == source) & df["eval_dataset"].isin(targets) & df["top1_test"].notna()]
    if rows.empty:
        raise UserError(
            f"no distribution-shift results: rows trained on {source} and evaluated on {', '.join(targets)}"
        )
    stats, avg, on_test = _run_stats(rows, "eval_dataset", variants)
    show_shots = rows.loc[rows["shots"] > 0, "shots"].nunique() > 1
    grouped = has_variants(rows)
    blocks, fewer = [], []
    for b in sorted_backbones(rows):
        combos = rows.loc[rows["backbone"] == b, ["method", "shots", VARIANT]].drop_duplicates()
        block = []
        for m, k, v in sorted(combos.itertuples(index=False), key=lambda mk: (method_key(mk[0]), mk[1], mk[2])):
            keys_cells = [TableCell(b), _method_cell(m, (b, m, k, v) in on_test)]
            keys_cells += [TableCell(int(k))] if show_shots else []
            keys_cells += [TableCell(v)] if grouped else []
            name = variant_name(describe_run(m, COL, k, b), v)
            block.append(_averaged_row(stats, avg, (b, m, k, v), targets, keys_cells, name, fewer))
        blocks.append(block)
    key_columns = [Column("backbone", "Backbone", False), Column("method", "Method", False)]
    key_columns += [Column("shots", "Shots", False)] if show_shots else []
    key_columns += [VARIANT_COLUMN] if grouped else []
    title = (
        f"Distribution shift: top-1 accuracy (%) trained on {dataset_label(source)}{_OVER_SEEDS if _has_std(stats) else ''}; "
        f"Average over the {len(variants)} variants; bold: best per column and backbone"
    )
    return _averaged_table(title, key_columns, targets, blocks, rows, fewer, on_test)


def vs_paper_table(df: pd.DataFrame, published: pd.DataFrame, datasets: Sequence[str] | None = None) -> Table:
    """Ours beside the published number and the difference, per backbone, method, shots and dataset.

    Each (backbone, method, shots) of ours lists every dataset that it or the paper has; for ImageNet
    itself the few-shot table's number is used where the shift table has one too.
    """
    ours = df[df["top1_test"].notna()]
    pub = published.sort_values("table", key=lambda t: t != "few_shot", kind="stable")
    pub = pub.drop_duplicates(["method", "backbone", "dataset", "eval_dataset", "shots"])
    if datasets:
        wanted = select_datasets(ours["eval_dataset"].unique(), datasets)
        ours, pub = ours[ours["eval_dataset"].isin(wanted)], pub[pub["eval_dataset"].isin(wanted)]
        if ours.empty:
            raise UserError(f"no results on {', '.join(wanted)}")
    group = ["backbone", "method", "shots"]
    stats = _lookup(seed_stats(ours, [*RUN, "dataset", "eval_dataset"]))
    on_test = marked_on_test(ours, RUN)
    paper = _lookup(pub[[*group, "dataset", "eval_dataset", "top1_test"]], ("top1_test",))
    variants = has_variants(ours)
    blocks = []
    for b, m, k, v in sorted(
        ours[RUN].drop_duplicates().itertuples(index=False),
        key=lambda g: (backbone_key(g[0]), method_key(g[1]), g[2], g[3]),
    ):
        pairs = {key[4:] for key in stats if key[:4] == (b, m, k, v)} | {key[3:] for key in paper if key[:3] == (b, m, k)}
        block = []
        for d, e in sorted(pairs, key=lambda p: (dataset_key(p[1]), dataset_key(p[0]))):
            values = {}
            if (b, m, k, v, d, e) in stats:
                mean, std, n = stats[(b, m, k, v, d, e)]
                values |= {"ours": (mean, std), "seeds": (n, math.nan)}
            if (b, m, k, d, e) in paper:
                values["paper"] = (paper[(b, m, k, d, e)][0], math.nan)
            if "ours" in values and "paper" in values:
                values["delta"] = (values["ours"][0] - values["paper"][0], math.nan)
            name = variant_name(describe_run(m, e, k, b), v)
            keys_cells = [TableCell(b), _method_cell(m, (b, m, k, v) in on_test), TableCell(int(k))]
            keys_cells += [TableCell(v)] if variants else []
            keys_cells += [TableCell(e, label=dataset_label(e))]
            block.append(_Row(keys_cells, values, name))
        blocks.append(block)
    key_columns = [
        Column("backbone", "Backbone", False),
        Column("method", "Method", False),
        Column("shots", "Shots", False),
        *([VARIANT_COLUMN] if variants else []),
        Column("eval_dataset", "Dataset", False),
    ]
    value_columns = [
        Column("ours", "Ours"),
        Column("seeds", "Seeds", fmt=".0f"),
        Column("paper", "Paper"),
        Column("delta", "Δ", fmt="+.2f"),
    ]
    notes = [
        "Δ: ours minus the paper; Paper is a dash where the paper reports no number; "
        "ImageNet variants: trained on ImageNet",
        PUBLISHED_SOURCE,
        *_shots_note(ours),
        *_on_test_note(on_test),
    ]
    title = "Ours beside the published numbers: top-1 accuracy (%), ours as mean ± std over seeds"
    return _assemble(title, key_columns, value_columns, blocks, bold=False, listed={"ours"}, notes=notes)


COST_METRICS = [
    Column("queries", "Queries", fmt=".0f"),
    Column("text_sequences", "Text seqs", fmt=".0f"),
    Column("images_encoded", "Images enc.", fmt=".0f"),
    Column("query_images", "Query images", fmt=".0f"),
    Column("model_calls", "Model calls", fmt=".0f"),
    Column("wall_s", "Wall (s)", fmt=".1f"),
    Column("gpu_s", "GPU (s)", fmt=".1f"),
    Column("peak_mem_mb", "Peak mem (MB)", fmt=".0f"),
    Column("learned_params", "Learned params", fmt=".0f"),
    Column("learned_bytes", "Learned bytes", fmt=".0f"),
]
RATIO_COLUMNS = [
    Column("mem_vs_white_box", "Mem / CoOp", fmt=".3g"),
    Column("learned_vs_white_box", "Learned / CoOp mem", fmt=".3g"),
]


def cost_table(df: pd.DataFrame, datasets: Sequence[str] | None = None) -> Table:
    """Per method, means over runs: queries, model calls, time, memory and the size of what it learned.

    With a CoOp row on the same backbone, two ratios make the paper's "1/80 of the memory" checkable:
    peak memory over CoOp's training peak memory, and learned bytes over that same memory.
    """
    if datasets:
        df = df[df["dataset"].isin(select_datasets(df["dataset"].unique(), datasets))]
    runs = pd.concat([df[df["cell_id"].isna()], df[df["cell_id"].notna()].drop_duplicates("cell_id")])
    if runs.empty:
        raise UserError("no runs to report costs for")
    # Images encoded by image-side queries: none for text-side methods and in folders older than the column.
    runs = runs.assign(query_images=runs["query_images"].fillna(0) if "query_images" in runs else 0)
    backbones = sorted_backbones(runs)
    multi = len(backbones) > 1
    with_ratio = (runs["method"] == WHITE_BOX).any()
    variants = has_variants(runs)
    blocks = []
    for b in backbones:
        per_method = runs[runs["backbone"] == b].groupby(["method", VARIANT])
        means = per_method[[c.key for c in COST_METRICS]].mean()
        counts = per_method.size()
        white = [mv for mv in means.index if mv[0] == WHITE_BOX]
        white_mem = means.loc[white[0], "peak_mem_mb"] if white else math.nan
        block = []
        for m, v in sorted(means.index, key=lambda mv: (method_key(mv[0]), mv[1])):
            mv = (m, v)
            values = {
                c.key: (float(means.loc[mv, c.key]), math.nan) for c in COST_METRICS if pd.notna(means.loc[mv, c.key])
            }
            values["runs"] = (float(counts[mv]), math.nan)
            if with_ratio and pd.notna(white_mem) and white_mem > 0:
                for col, num in (("mem_vs_white_box", "peak_mem_mb"), ("learned_vs_white_box", "learned_bytes")):
                    if num in values:
                        scale = 2**20 if num == "learned_bytes" else 1
                        values[col] = (values[num][0] / (white_mem * scale), math.nan)
            name = variant_name(f"{b + '/' if multi else ''}{m}/{COL}", v)
            keys = ([TableCell(b)] if multi else []) + [_method_cell(m)] + ([TableCell(v)] if variants else [])
            block.append(_Row(keys, values, name))
        blocks.append(block)
    key_columns = ([Column("backbone", "Backbone", False)] if multi else []) + [Column("method", "Method", False)]
    key_columns += [VARIANT_COLUMN] if variants else []
    value_columns = [Column("runs", "Runs", fmt=".0f"), *COST_METRICS, *(RATIO_COLUMNS if with_ratio else [])]
    notes = (
        ["Mem / CoOp: peak memory over CoOp's (its training) on the same backbone; Learned / CoOp mem: learned "
         "bytes over that memory; the paper claims about 1/80 (0.0125)"]
        if with_ratio
        else []
    )
    title = "Cost per run (means over runs; one run per cell)"
    listed = {c.key for c in COST_METRICS}
    return _assemble(title, key_columns, value_columns, blocks, bold=False, listed=listed, notes=notes)


def claims_table(df: pd.DataFrame, datasets: Sequence[str] | None = None) -> Table:
    """The papers' claims (:mod:`benchmark.report.claims`): published, ours, and how ours was measured."""
    if datasets:
        df = df[df["dataset"].isin(select_datasets(df["dataset"].unique(), datasets))]
    columns = [Column("claim", "Claim", False), Column("published", "Published", False),
               Column("ours", "Ours", False), Column("evidence", "How ours was measured", False)]
    claims = measure_claims(df)
    rows = [[TableCell(c.statement), TableCell(c.published_text), TableCell(ours_text(c)), TableCell(c.evidence)]
            for c in claims]
    notes = ["Published: " + "; ".join(f"{c.key}: {c.source}" for c in claims),
             "training time: CoOp's mean wall_s over CraFT's (above 1: CraFT faster); memory: what CraFT deploys "
             "(mean learned_bytes: prompt and refinement module, the model staying behind the black box) over CoOp's "
             "mean training peak_mem_mb; accuracies in points of top-1 (%)"]
    return Table("Claims of the CraFT and CBBT papers, published and measured", columns, rows, notes=notes)


def _run_stats(rows: pd.DataFrame, column: str, averaged: Sequence[str]) -> tuple[dict, dict, set[tuple]]:
    """Per run (backbone, method, shots) and value of ``column``: mean, std and n over seeds; per run: the
    mean and std of its average over the ``averaged`` values; and the runs whose epoch was chosen on test."""
    stats = _lookup(seed_stats(rows, [*RUN, column]))
    avg = _lookup(average_over(rows, RUN, averaged, column), ("mean", "std"))
    return stats, avg, marked_on_test(rows, RUN)


def has_variants(rows: pd.DataFrame) -> bool:
    """Whether ``rows`` were grouped into variants (``--group-by``): tables then show a Variant column."""
    return VARIANT in rows and bool((rows[VARIANT] != "").any())


def variant_name(name: str, variant: str) -> str:
    """How a run of a variant is named in a table's notes: ``craft/dtd/16-shot [budget=2000]``."""
    return f"{name} [{variant}]" if variant else name


def _averaged_row(
    stats: dict[tuple, tuple[float, ...]], avg: dict[tuple, tuple[float, ...]], run: tuple, columns: Sequence[str],
    keys_cells: list[TableCell], name: str, fewer: list[str],
) -> _Row:
    """The row of ``run`` (backbone, method, shots, variant): its mean and std in each of ``columns`` and its
    ``average``; those of its columns measured over fewer seeds than its others are added to ``fewer``."""
    values = {c: stats[(*run, c)][:2] for c in columns if (*run, c) in stats}
    if run in avg:
        values["average"] = avg[run]
    fewer += _fewer_seeds(name, {c: stats[(*run, c)][2] for c in columns if (*run, c) in stats})
    return _Row(keys_cells, values, name)


def _averaged_table(
    title: str, key_columns: list[Column], columns: list[str], blocks: list[list[_Row]], rows: pd.DataFrame,
    fewer: list[str], on_test: set[tuple],
) -> Table:
    """A table of :func:`_averaged_row` rows: a dataset per column of ``columns``, then Average; bold on
    the best of each column in a block; notes on fewer seeds, fewer shots and epochs chosen on test."""
    value_columns = [Column(c, dataset_label(c)) for c in columns] + [Column("average", "Average")]
    return _assemble(
        title, key_columns, value_columns, blocks, bold=True, listed=set(columns),
        notes=_seeds_note(fewer) + _shots_note(rows) + _on_test_note(on_test),
    )


def _lookup(frame: pd.DataFrame, values: Sequence[str] = ("mean", "std", "n")) -> dict[tuple, tuple[float, ...]]:
    """Rows of ``frame`` as {its other columns: its ``values`` columns}."""
    keys = [c for c in frame.columns if c not in values]
    rows = zip(frame[keys].itertuples(index=False, name=None), frame[list(values)].itertuples(index=False, name=None))
    return {tuple(k): tuple(float(v) for v in vals) for k, vals in rows}


_OVER_SEEDS = ", mean ± std over seeds"


def _has_std(stats: dict[tuple, tuple[float, ...]]) -> bool:
    return any(not math.isnan(v[1]) for v in stats.values())


def _method_cell(method: str, on_test: bool = False) -> TableCell:
    """A method's key cell; ``on_test``: its label carries :data:`ON_TEST_MARK` (see :data:`ON_TEST_NOTE`)."""
    return TableCell(method, label=method_label(method) + (ON_TEST_MARK if on_test else ""))


def _on_test_note(marked: set[tuple]) -> list[str]:
    return [ON_TEST_NOTE] if marked else []


def _fewer_seeds(name: str, counts: dict[str, float]) -> list[str]:
    """Cells of a row measured over fewer seeds than the row's others: ``craft/dtd/1-shot (2 of 3)``."""
    most = max(counts.values(), default=0)
    return [f"{name.replace(COL, col)} ({n:.0f} of {most:.0f})" for col, n in counts.items() if n < most]


def _seeds_note(fewer: list[str]) -> list[str]:
    return [f"fewer seeds: {', '.join(fewer)}"] if fewer else []


def _shots_note(rows: pd.DataFrame) -> list[str]:
    """Runs that trained on fewer images per class than their shots (a class had fewer), named with what they used."""
    if "shots_used" not in rows:  # folders written before the column existed
        return []
    short = rows[rows["shots_used"].notna() & (rows["shots"] > 0) & (rows["shots_used"] < rows["shots"])]
    if short.empty:
        return []
    used = short.groupby(["backbone", "method", "dataset", "shots"], sort=True)["shots_used"].min()
    named = [f"{describe_run(m, d, k, b)} used {int(n)}" for (b, m, d, k), n in used.items()]
    return [f"fewer shots than asked (a class had fewer training images): {', '.join(named)}"]


def _assemble(
    title: str,
    key_columns: list[Column],
    value_columns: list[Column],
    blocks: list[list[_Row]],
    *,
    bold: bool,
    listed: set[str],
    notes: list[str],
) -> Table:
    """Cells from rows: a dash where a value is absent, bold on the best of each column in a block.

    A dash in a ``listed`` column is also named in ``Table.missing``.
    """
    table = Table(title, key_columns + value_columns, [], notes=list(notes))
    for block in blocks:
        if table.rows:
            table.breaks.append(len(table.rows))
        best = {}
        for c in value_columns if bold else []:
            shown = [float(format(r.values[c.key][0], c.fmt)) for r in block if c.key in r.values]
            if len(shown) >= 2:
                best[c.key] = max(shown)
        for r in block:
            cells = list(r.keys)
            for c in value_columns:
                if c.key not in r.values:
                    cells.append(TableCell(None))
                    if c.key in listed:
                        table.missing.append(r.name.replace(COL, c.key))
                    continue
                mean, std = r.values[c.key]
                is_best = c.key in best and float(format(mean, c.fmt)) == best[c.key]
                cells.append(TableCell(mean, None if math.isnan(std) else std, is_best))
            table.rows.append(cells)
    return table
