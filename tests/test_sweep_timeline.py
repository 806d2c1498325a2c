"""``measurement.sweep_timeline``: a sweep's idle slot time and summed wall time from its rows' timestamps."""

from __future__ import annotations

import pandas as pd


def test_the_timeline_counts_the_seconds_a_slot_was_idle_and_each_cell_once() -> None:
    from measurement.sweep_timeline import timeline

    t = pd.Timestamp("2026-12-06 00:00:00", tz="UTC")
    s = pd.Timedelta(seconds=1)
    # Two slots: a and b together for 4 s, then b alone for 2 s; c after a 1 s gap, alone for 3 s.
    # Cell b was scored on two datasets: two rows with the same times, counted once.
    rows = [("a", 0, 4, 4.0), ("b", 0, 6, 6.0), ("b", 0, 6, 6.0), ("c", 7, 10, 3.0)]
    df = pd.DataFrame([{"cell_id": c, "started_at": t + a * s, "finished_at": t + b * s, "wall_s": w} for c, a, b, w in rows])
    got = timeline(df, slots=2)
    assert got == {"cells": 3.0, "span_s": 10.0, "under_slots_s": 6.0, "wall_s": 13.0, "slot_s": 20.0}
