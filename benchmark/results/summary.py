"""What a results folder holds, cell by cell: status, the last line of a failure, and what each run cost.

Read from the result files that verify (:func:`benchmark.results.store.scan_cells`), a few columns
each, with pyarrow alone. Columns an older folder lacks read as absent (None), never as zero.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pyarrow.parquet as pq

from benchmark.results.store import parse_cell_file, resolve, scan_cells, stray_temporaries, list_files

COLUMNS = ("cell_id", "status", "error", "method", "dataset", "backbone", "shots", "seed", "queries", "wall_s", "gpu_s",
           "config", "config_hash")


@dataclass(frozen=True)
class CellRecord:
    """One finished cell: what it ran, its status, why it failed (the error's last line) and its cost."""

    cell_id: str
    status: str
    method: str
    dataset: str
    backbone: str
    shots: int
    seed: int
    error: str | None = None
    queries: int | None = None
    wall_s: float | None = None
    gpu_s: float | None = None
    sweep: str | None = None  # the sweep that ran it: its config hash and file (None in folders from before)

    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.shots}shot/seed{self.seed}/{self.backbone}"


@dataclass
class FolderSummary:
    """Every cell found under a results folder (ok wins over an older failure record), damaged files, temporaries."""

    cells: dict[str, CellRecord]
    damaged: dict[str, str]
    temporaries: list[str]

    def with_status(self, status: str) -> list[CellRecord]:
        return sorted((c for c in self.cells.values() if c.status == status), key=CellRecord.label)

    def sweeps(self) -> Counter:
        """Cells per sweep (``<config hash> (<config file>)``; ``None``: not recorded), most first."""
        return Counter(c.sweep for c in self.cells.values())

    def total(self, column: str) -> tuple[float, int]:
        """The sum of ``column`` over done cells and how many of them record it."""
        values = [getattr(c, column) for c in self.cells.values() if c.status == "ok" and getattr(c, column) is not None]
        return float(sum(values)), len(values)


def last_line(error: str | None) -> str:
    """The last non-blank line of an error (a traceback's exception line)."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no error recorded)"


def _sweep(config_hash: str | None, config: str | None) -> str | None:
    if config_hash is None:
        return None
    try:
        path = json.loads(config or "{}").get("path")
    except (ValueError, AttributeError):
        path = None
    return f"{config_hash} ({path})" if path else config_hash


def summarize(out: str) -> FolderSummary:
    """Read the cells under ``out``: one :class:`CellRecord` per cell whose file verifies."""
    fs, _ = resolve(out)
    status, damaged = scan_cells(out)
    cells: dict[str, CellRecord] = {}
    for f in list_files(out):
        kind = parse_cell_file(f.base_name)
        if kind is None or f.path in damaged or status.get(kind[0]) != kind[1]:
            continue  # not a result file, damaged, or a failure record that a success superseded
        with fs.open_input_file(f.path) as stream:
            reader = pq.ParquetFile(stream)
            table = reader.read(columns=[c for c in COLUMNS if c in reader.schema_arrow.names])
        row = table.slice(0, 1).to_pylist()[0]  # the cell's own row (others are extra test sets)
        cells[kind[0]] = CellRecord(
            kind[0], kind[1], row.get("method"), row.get("dataset"), row.get("backbone"), row.get("shots"),
            row.get("seed"), last_line(row.get("error")) if kind[1] != "ok" else None,
            row.get("queries"), row.get("wall_s"), row.get("gpu_s"), _sweep(row.get("config_hash"), row.get("config")),
        )
    return FolderSummary(cells, damaged, stray_temporaries(out))
