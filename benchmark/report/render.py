"""A :class:`~benchmark.report.tables.Table` as Markdown, LaTeX (booktabs), CSV or HTML text.

Markdown, LaTeX and HTML (a ``<table>`` with its caption and notes, escaped, for ``craft report``) show a missing cell as a dash, the best of a block in bold and the table's
notes (missing cells, fewer seeds, sources) under it. CSV is data: keys as they are in the
results, numbers at full precision, a ``<column>_std`` column beside any column with stds,
empty fields for missing cells, no notes.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from typing import Any

import pandas as pd

from benchmark.errors import UserError
from benchmark.report.tables import TableCell, Column, Table, build_table

FORMATS = ("md", "latex", "csv", "html")
WIDE = 8  # LaTeX tables with more columns are scaled to the text width


def render_table(
    df: pd.DataFrame,
    kind: str,
    fmt: str = "md",
    *,
    backbone: str | None = None,
    shots: Sequence[int] | None = None,
    datasets: Sequence[str] | None = None,
    source: str | None = None,
    **options: Any,
) -> str:
    """Table ``kind`` of the results ``df`` as text in ``fmt``; ``options``: ``group_by``, ``cost_line``
    (see :func:`~benchmark.report.tables.build_table`), and for ``compare`` ``other`` (B's rows) and ``names``."""
    if kind == "compare":
        from benchmark.report.compare import build_compare

        other, names = options.pop("other", None), options.pop("names", ("A", "B"))
        if other is None:
            raise UserError("--kind compare needs two results folders: craft table A B --kind compare")
        table = build_compare(df, other, names, backbone=backbone, shots=shots, datasets=datasets, **options)
        return render(table, fmt)
    return render(build_table(df, kind, backbone=backbone, shots=shots, datasets=datasets, source=source, **options), fmt)


def render(table: Table, fmt: str) -> str:
    """``table`` as ``md``, ``latex`` or ``csv`` text."""
    if fmt == "md":
        return _markdown(table)
    if fmt == "latex":
        return _latex(table)
    if fmt == "csv":
        return _csv(table)
    if fmt == "html":
        return _html(table)
    raise UserError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")


def notes(table: Table) -> list[str]:
    """The lines under a table: its missing cells first, then its notes."""
    return ([f"missing: {', '.join(table.missing)}"] if table.missing else []) + table.notes


def _number(cell: TableCell, col: Column, bold: str, with_std: str) -> str:
    """A value in ``col``'s format, wrapped in ``bold`` when best, followed by ``with_std`` when it has a std."""
    value = format(cell.value, col.fmt)
    text = bold.format(value) if cell.bold else value
    return text if cell.std is None else text + with_std.format(format(cell.std, col.fmt.lstrip("+")))


def _markdown(table: Table) -> str:
    def text(cell: TableCell, col: Column) -> str:
        if not col.numeric:
            return cell.label or str(cell.value)
        return "-" if cell.value is None else _number(cell, col, "**{}**", " ± {}")

    lines = [
        f"**{table.title}**",
        "",
        "| " + " | ".join(c.label for c in table.columns) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|",
    ]
    lines += ["| " + " | ".join(text(cell, c) for cell, c in zip(row, table.columns)) + " |" for row in table.rows]
    for note in notes(table):
        lines += ["", note]
    return "\n".join(lines) + "\n"


_TEX = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$", "†": r"$^\dagger$",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def _latex(table: Table) -> str:
    def text(cell: TableCell, col: Column) -> str:
        if not col.numeric:
            return tex_escape(cell.label or str(cell.value))
        return "--" if cell.value is None else _number(cell, col, r"\textbf{{{}}}", r" {{\scriptsize$\pm${}}}")

    spec = "".join("r" if c.numeric else "l" for c in table.columns)
    wide = len(table.columns) > WIDE
    body = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(table.title)}}}",
        *([r"\resizebox{\linewidth}{!}{%"] if wide else []),
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(tex_escape(c.label) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(table.rows):
        if i in table.breaks:
            body.append(r"\midrule")
        body.append(" & ".join(text(cell, c) for cell, c in zip(row, table.columns)) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}" + ("}" if wide else "")]
    if notes(table):
        body += [r"\par\smallskip", r"{\footnotesize " + r" \\ ".join(tex_escape(n) for n in notes(table)) + "}"]
    body.append(r"\end{table}")
    return "% needs \\usepackage{booktabs}" + (" and graphicx" if wide else "") + "\n" + "\n".join(body) + "\n"


def _csv(table: Table) -> str:
    with_std = {c.key for i, c in enumerate(table.columns) if any(row[i].std is not None for row in table.rows)}
    header = []
    for c in table.columns:
        header += [c.key, f"{c.key}_std"] if c.key in with_std else [c.key]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in table.rows:
        fields = []
        for cell, c in zip(row, table.columns):
            fields.append("" if cell.value is None else cell.value if not c.numeric else format(cell.value, ".10g"))
            if c.key in with_std:
                fields.append("" if cell.std is None else format(cell.std, ".10g"))
        writer.writerow(fields)
    return out.getvalue()


def _html(table: Table) -> str:
    """A ``<figure>`` holding the table (caption: its title; numbers right-aligned, best in bold, a rule at each
    block) and its notes; every text escaped."""

    def text(cell: TableCell, col: Column) -> str:
        if not col.numeric:
            return html.escape(cell.label or str(cell.value))
        return "&ndash;" if cell.value is None else html.escape(_number(cell, col, "\x00{}\x01", " ± {}")).replace(
            "\x00", "<b>").replace("\x01", "</b>")

    head = "".join(f'<th class="{"num" if c.numeric else "key"}">{html.escape(c.label)}</th>' for c in table.columns)
    body = []
    for i, row in enumerate(table.rows):
        cls = ' class="block"' if i in table.breaks and i else ""
        cells = "".join(f'<td class="{"num" if c.numeric else "key"}">{text(cell, c)}</td>' for cell, c in zip(row, table.columns))
        body.append(f"<tr{cls}>{cells}</tr>")
    notes_html = "".join(f"<p class=\"note\">{html.escape(n)}</p>" for n in notes(table))
    return (f"<figure class=\"table\"><table><caption>{html.escape(table.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{notes_html}</figure>\n")
