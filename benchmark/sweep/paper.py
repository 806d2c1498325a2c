"""``craft paper``: the CraFT paper's whole grid in one run, then every table, the figures and the claims table.

The grid is data (``benchmark/configs/paper/<suite>.yaml``: shared keys and named parts, each
part a sweep config checked by the same parser as ``craft bench``). All parts' cells run as one
sweep, on one set of model servers, largest datasets first, so that the servers never wait on the
tail of a part. Rows record the whole paper plan as their config. Then ``<out>/report/`` gets the
tables (Markdown and CSV), the figures, the claims table and ``report.html`` (``craft report``).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.sweep.cell import Cell
from benchmark.sweep.config import SweepConfig

SUITES = ("builtin", "coop")
TABLES = ("few-shot", "shift", "vs-paper", "cost", "claims")  # in the report's order
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", choices=SUITES, default="builtin",
                        help="builtin (the built-in suite and model, no download) or coop (CoOp's datasets under "
                             "--root, the paper's backbones); default: builtin")
    parser.add_argument("--root", default=None, help="data root holding the CoOp dataset folders (--suite coop)")
    parser.add_argument("--out", default=None, help="results folder or URI (default: results/paper_<suite>)")
    parser.add_argument("--backbones", nargs="+", metavar="NAME:WEIGHTS", default=None,
                        help="run every part on these backbones instead (e.g. RN50:openai)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print each part's plan (cells, queries, text sequences, estimated GPU time) and run "
                             "nothing; needs no data and no weights")
    parser.add_argument("--gpu", default="h100", metavar="NAME",
                        help="with --dry-run: the GPU whose craft perf rate gives the estimate (default: h100)")
    parser.add_argument("--address", default=None, help="Ray cluster to run on (default: RAY_ADDRESS, else this machine)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")


@dataclass(frozen=True)
class PaperPlan:
    """The paper's grid for one suite: its parts, each a checked sweep config writing to the same ``out``."""

    suite: str
    out: str
    parts: dict[str, SweepConfig]

    def part_cells(self) -> dict[str, list[Cell]]:
        """Each part's cells, in its own order."""
        from benchmark.sweep.plan import expand

        return {name: expand(cfg) for name, cfg in self.parts.items()}

    def cells(self, part_cells: dict[str, list[Cell]] | None = None) -> list[Cell]:
        """Every part's cells (``part_cells``, if already expanded), each once, the most expensive first
        (classes x shots, then queries)."""
        from benchmark.datasets.registry import get_spec
        from benchmark.sweep.plan import estimated_queries

        unique: dict[str, Cell] = {}
        for cells in (part_cells or self.part_cells()).values():
            for cell in cells:
                unique.setdefault(cell.cell_id, cell)
        return sorted(unique.values(),
                      key=lambda c: (-get_spec(c.dataset).classes * max(c.shots, 1), -estimated_queries(c)))


def paper_plan(suite: str, out: str | None = None, root: str | None = None,
               backbones: list[str] | None = None) -> PaperPlan:
    """The shipped grid of ``suite``, with the flags' changes, each part checked as a sweep config."""
    from benchmark.config_yaml import read_yaml
    from benchmark.sweep.config import config_from_dict

    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; suites: {', '.join(SUITES)}")
    folder = resources.files("benchmark").joinpath("configs", "paper")
    path = Path(str(folder.joinpath(f"{suite}.yaml")))
    raw = read_yaml(path, str(path)) or {}
    out = out or f"results/paper_{suite}"
    parts = {}
    for name, part in raw["parts"].items():
        merged: dict[str, Any] = {**raw.get("common", {}), **part, "out": out}
        if root is not None:
            merged["root"] = root
        if backbones:
            merged["backbones"] = list(backbones)
        parts[name] = config_from_dict(merged, f"craft paper --suite {suite} ({name})", base_dir=path.parent)
    return PaperPlan(suite, out, parts)


def run(args: argparse.Namespace) -> int:
    from benchmark.sweep.plan import check_inputs, estimated_queries, format_plan, make_plan

    if args.num_cpus is not None and args.num_cpus < 1:
        raise UserError(f"--num-cpus must be >= 1, got {args.num_cpus}")
    if args.suite == "coop" and args.root is None and not args.dry_run:
        raise UserError("--suite coop needs --root DIR, the folder holding the CoOp dataset folders (see craft datasets list)")
    from benchmark.sweep.estimate import cell_images, cell_sequences, check_gpu, gpu_hours

    check_gpu(args.gpu)
    plan = paper_plan(args.suite, args.out, args.root, args.backbones)
    by_part = plan.part_cells()
    cells = plan.cells(by_part)
    if args.dry_run:
        sequences = {}
        for name, cfg in plan.parts.items():
            print(f"part {name}:")
            print(format_plan(make_plan(by_part[name], cfg.out), cfg, gpu=args.gpu))
            sequences[name] = sum(cell_sequences(estimated_queries(c), c.dataset) for c in by_part[name])
        total = sum(cell_sequences(estimated_queries(c), c.dataset) for c in cells)
        images = sum(cell_images(c, estimated_queries(c)) for c in cells)
        bound = max(sequences, key=sequences.get)
        print(f"craft paper --suite {plan.suite}: {len(cells)} cells in all (shared cells counted once), "
              f"{total:,} text sequences, estimated {gpu_hours(total, args.gpu):.2f} GPU-hours on one "
              f"{args.gpu.upper()} (budgeted queries only; see each part), and {images:,} images to encode "
              f"(not in the estimate); the largest part: {bound} "
              f"({sequences[bound] / max(total, 1):.0%} of the sequences) -> {plan.out}")
        return 0
    for cfg in plan.parts.values():
        for note in check_inputs(cfg):  # said once, before anything runs
            log.info("note: %s", note)

    from benchmark.stop_watch import say_on_forced_exit
    from benchmark.sweep.runner import resolve_weights, run_sweep

    first = next(iter(plan.parts.values()))
    weights = resolve_weights(cells, first.weights)  # on this machine, before Ray starts; staged to the servers
    say_on_forced_exit(f"done cells are kept; run craft paper --suite {plan.suite} again to resume")
    start = time.perf_counter()
    summary = run_sweep(cells, plan.out, first.server, address=args.address, num_cpus=args.num_cpus,
                        progress=not args.no_progress, config=plan, weights=weights)
    print(f"{summary.done} cells done, {summary.skipped} already done (skipped), {summary.failed} failed, "
          f"in {time.perf_counter() - start:.1f} s; results in {plan.out}")
    for line in summary.failures:
        log.error("failed: %s", line)
    written = write_report(plan, cells)
    print(f"report: {', '.join(str(p) for p in written)}")
    return 1 if summary.failed else 0


def write_report(plan: PaperPlan, cells: list[Cell]) -> list[Path]:
    """Every table (Markdown in one file, CSV each), the figures and the claims table under ``<out>/report/``.

    A table without its runs (the shift table of a folder without shift runs, say) is a line saying so.
    """
    from benchmark.report.load import load_results
    from benchmark.report.plots import plot_queries, plot_shots
    from benchmark.report.render import render
    from benchmark.report.tables import build_table

    if "://" in plan.out:
        raise UserError(f"craft paper writes its report to a local folder; {plan.out} is a URI: "
                        "run craft table and craft plot on it instead")
    folder = Path(plan.out) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    df = load_results(plan.out)
    df = df[df["cell_id"].isin({c.cell_id for c in cells})]
    text, written = [f"# craft paper --suite {plan.suite}\n"], []
    for kind in TABLES:
        if kind == "vs-paper" and plan.suite != "coop":
            continue  # the paper publishes no built-in suite numbers
        try:
            table = build_table(df, kind, cost_line=kind != "claims")
        except UserError as exc:
            text.append(f"{kind}: not rendered: {exc}\n")
            continue
        text.append(render(table, "md"))
        path = folder / f"{kind}.csv"
        _write_text(path, render(table, "csv"))
        written.append(path)
    report = folder / "tables.md"
    _write_text(report, "\n".join(text))
    from benchmark.report.html_report import build_report

    html = folder / "report.html"  # the whole folder as one file that opens in a browser
    _write_text(html, build_report(plan.out, title=f"craft paper --suite {plan.suite}"))
    written.append(html)
    figures = folder / "figures"
    for plot in (plot_shots, plot_queries):
        try:
            written += plot(df, figures)
        except UserError as exc:
            log.warning("figure not drawn: %s", exc)
    return [report, *written]


def _write_text(path: Path, text: str) -> None:
    from benchmark.files import write_atomic

    write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))
