"""How a finished sweep filled its run slots: whether the schedule, rather than the runs, cost time.

Run from the repository root on a results folder (``craft bench``, ``craft paper``):

    python -m measurement.sweep_timeline RESULTS [--slots 2]

From each cell's ``started_at``, ``finished_at`` and ``wall_s`` (one row per cell: a cell scored on
several datasets writes several rows with the same times) it prints: the span from the first start
to the last end, the seconds during which fewer than ``--slots`` runs were running (a slot idle:
the queue's tail, or a gap between two runs), the runs' summed wall time against span x slots, and
each method's share of that wall time. The timestamps are whole seconds, so the idle seconds are
good to about a second per run boundary.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def timeline(df: pd.DataFrame, slots: int, step: float = 0.5) -> dict[str, float]:
    """The cells of ``df`` (result rows): their count, span, seconds with fewer than ``slots`` running,
    summed wall time and span x slots."""
    cells = df.drop_duplicates("cell_id")
    t0 = cells["started_at"].min()
    start = (cells["started_at"] - t0).dt.total_seconds().to_numpy()
    end = (cells["finished_at"] - t0).dt.total_seconds().to_numpy()
    span = float(end.max()) if len(end) else 0.0
    ticks = np.arange(0.0, span, step)
    running = ((start[None, :] <= ticks[:, None]) & (end[None, :] > ticks[:, None])).sum(axis=1)
    return {"cells": float(len(cells)), "span_s": span, "under_slots_s": float(step * (running < slots).sum()),
            "wall_s": float(cells["wall_s"].sum()), "slot_s": span * slots}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="a results folder")
    p.add_argument("--slots", type=int, default=2, help="runs the sweep had at once (its CPUs; default 2)")
    args = p.parse_args(argv)

    from benchmark.report.load import load_results

    df = load_results(args.results, ok_only=False)
    t = timeline(df, args.slots)
    print(f"{args.results}: {t['cells']:.0f} cells over {t['span_s']:.1f} s from the first start to the last end")
    print(f"fewer than {args.slots} runs running: {t['under_slots_s']:.1f} s")
    print(f"runs' wall time {t['wall_s']:.1f} s of {t['slot_s']:.1f} slot-seconds ({t['wall_s'] / max(t['slot_s'], 1e-9):.1%})")
    share = df.drop_duplicates("cell_id").groupby("method")["wall_s"].sum().sort_values(ascending=False)
    print("wall time by method: " + ", ".join(f"{m} {v / t['wall_s']:.0%}" for m, v in share.items()))


if __name__ == "__main__":
    main()
