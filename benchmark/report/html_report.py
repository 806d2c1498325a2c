"""One self-contained HTML file for a results folder: what ran, what failed, the tables, the figures, the cost
and where the numbers came from.

Everything is inside the file (the figures as base64 PNG ``<img>``, the style in one ``<style>``, no script,
nothing fetched), so it opens from disk in any browser and can be mailed or archived as it is. A table or
figure the results cannot give (no published numbers for this backbone, no traces, variants that need
``--group-by``) is a one-line note in its place, so one gap does not hide the rest.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.errors import UserError
from benchmark.report.render import render
from benchmark.report.tables import build_table, cost_note

TABLES = (("few-shot", "Few-shot accuracy (top-1 %, mean ± std over seeds)"), ("shift", "Distribution shift"),
          ("vs-paper", "Ours against the published numbers"), ("claims", "The papers' headline claims"),
          ("cost", "Cost per run"))
PROVENANCE = (("precision", "precision"), ("computed_in", "computed in"), ("compile", "compile"),
              ("attention", "attention"), ("colocate", "colocated"), ("protocol", "protocol"), ("device", "device"),
              ("cuda_version", "CUDA"), ("python_version", "Python"), ("torch_version", "torch"),
              ("open_clip_version", "open_clip"), ("code_version", "code version"), ("config_hash", "config hash"),
              ("host", "host"))
FIGURE_DPI = 150  # inlined figures: sharp on screen at a few hundred KB each (craft plot writes 300 dpi)
STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #e4e4e4;white-space:nowrap}th{border-bottom:2px solid #888}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}tr.block td{border-top:2px solid #888}
figure{margin:1em 0;overflow-x:auto}img{max-width:100%;height:auto}p.note{font-size:.85em;color:#555;margin:.2em 0}
th.key{text-align:left}.failed{color:#a00}.summary td{white-space:normal}
"""


def _esc(value: object) -> str:
    return html.escape(str(value))


def _section(title: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>\n{body}</section>\n'


def _kv_table(rows: list[tuple[str, str]], cls: str = "summary") -> str:
    body = "".join(f'<tr><th class="key">{_esc(k)}</th><td>{_esc(v)}</td></tr>' for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>\n'


def _note(text: str) -> str:
    return f'<p class="note">{_esc(text)}</p>\n'


def provenance_rows(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Each provenance column with its values and how many rows have each (``not recorded``: older rows)."""
    rows = []
    for column, label in PROVENANCE:
        values = df[column].astype("string").fillna("not recorded") if column in df else pd.Series(["not recorded"] * len(df))
        counts = values.value_counts()
        rows.append((label, "; ".join(f"{v} ({n} rows)" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))))
    return rows


def _status_section(results: str) -> tuple[str, list[str]]:
    """The folder's cells done and failed (each failure with its error's last line), damaged files, sweeps, totals."""
    from benchmark.results.summary import summarize

    found = summarize(results)
    done, failed = found.with_status("ok"), found.with_status("failed")
    queries, _ = found.total("queries")
    wall, n_wall = found.total("wall_s")
    gpu, n_gpu = found.total("gpu_s")
    rows = [("cells done", str(len(done))), ("cells failed", str(len(failed))),
            ("damaged result files", str(len(found.damaged))),
            ("queries (done cells)", f"{queries:,.0f}"),
            ("wall hours", f"{wall / 3600:.3f} ({n_wall} of {len(done)} cells record it)"),
            ("GPU hours", f"{gpu / 3600:.3f} ({n_gpu} of {len(done)} cells record it)")]
    rows += [("sweep", f"{name or 'not recorded (older rows)'}: {n} cells") for name, n in found.sweeps().most_common()]
    body = _kv_table(rows)
    if failed:
        items = "".join(f"<li><code>{_esc(c.label())}</code> ({_esc(c.cell_id)}): {_esc(c.error)}</li>" for c in failed)
        body += f'<h3 class="failed">Failed cells</h3><ul class="failed">{items}</ul>\n'
    if found.damaged:
        items = "".join(f"<li><code>{_esc(p)}</code>: {_esc(w)}</li>" for p, w in sorted(found.damaged.items()))
        body += f'<h3 class="failed">Damaged result files</h3><ul class="failed">{items}</ul>\n'
    return body, [c.label() for c in failed]


def _tables(df: pd.DataFrame, group_by: Sequence[str] | None) -> tuple[str, list[str]]:
    """Each table of :data:`TABLES` the rows can give, in HTML; the others as notes; and the few-shot table's missing cells."""
    parts, missing = [], []
    for kind, heading in TABLES:
        try:
            table = build_table(df, kind, group_by=group_by)
        except UserError as exc:
            parts.append(f"<h3>{_esc(heading)}</h3>" + _note(f"not shown: {exc}"))
            continue
        if not table.rows:
            parts.append(f"<h3>{_esc(heading)}</h3>" + _note("not shown: no rows for this table in these results"))
            continue
        parts.append(f"<h3>{_esc(heading)}</h3>" + render(table, "html"))
        if kind == "few-shot":  # the headline table's gaps: the cells a reader looks for
            missing = list(table.missing)
    return "".join(parts), missing


def _figures(df: pd.DataFrame) -> str:
    """The shots and queries figures, drawn to a temporary folder and inlined as base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from benchmark.report import plots

    parts = []
    with tempfile.TemporaryDirectory(prefix="craft-report-") as tmp, _dpi(plots, FIGURE_DPI):
        for name, draw in (("accuracy versus shots", plots.plot_shots), ("accuracy versus queries", plots.plot_queries)):
            try:
                paths = draw(df, Path(tmp) / name.replace(" ", "_"))
            except UserError as exc:
                parts.append(_note(f"figure {name} not drawn: {exc}"))
                continue
            for path in paths:
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f'<figure><img alt="{_esc(path.stem)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_esc(path.stem)}</figcaption></figure>\n")
    return "".join(parts)


class _dpi:
    """Draw at another dpi for a while (the report's inlined figures), restored after."""

    def __init__(self, module, dpi: int) -> None:  # noqa: ANN001 - the plots module
        self.module, self.dpi = module, dpi

    def __enter__(self) -> None:
        self.saved, self.module.DPI = self.module.DPI, self.dpi

    def __exit__(self, *exc: object) -> None:
        self.module.DPI = self.saved


def build_report(results: str, *, group_by: Sequence[str] | None = None, title: str | None = None) -> str:
    """The HTML report of results folder ``results`` (see the module)."""
    from benchmark.report.load import load_results

    every = load_results(results, ok_only=False, on_damaged=lambda path, why: None)  # named in the status section
    ok = every[every["status"] == "ok"].reset_index(drop=True)
    status, failed = _status_section(results)
    title = title or f"craft-bench results: {Path(results).name or results}"
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
           f"<h1>{_esc(title)}</h1>",
           _note(f"{results}: {len(ok)} ok rows, {every['cell_id'].nunique()} cells; generated {generated} by craft report")]
    out.append(_section("What the folder holds", status, "status"))
    if ok.empty:
        out.append(_section("Tables and figures", _note("no cell finished ok: nothing to tabulate"), "tables"))
    else:
        tables, missing = _tables(ok, group_by)
        lines = _note("missing from the few-shot table (no ok result): " + ", ".join(missing)) if missing else _note(
            "no cell missing from the few-shot table")
        if failed:
            lines += _note(f"failed cells ({len(failed)}): " + ", ".join(failed))
        out.append(_section("Missing and failed cells", lines, "missing"))
        out.append(_section("Tables", tables, "tables"))
        out.append(_section("Cost", _note(cost_note(ok)), "cost"))
        out.append(_section("Figures", _figures(ok), "figures"))
    out.append(_section("Provenance", _kv_table(provenance_rows(every)), "provenance"))
    out.append("</body></html>\n")
    return "".join(out)
