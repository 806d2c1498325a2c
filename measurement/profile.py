"""``craft perf --profile``: what a query pass and a CraFT generation spend their time on.

Three figures per fast path, for the next optimisation to aim at:

* **pass**: one raw call (``popsize x classes`` prompts) under ``torch.profiler``: its wall time,
  the time the device was busy (the sum of its kernels and copies; on one stream they do not
  overlap) and the operations that took it, largest first.
* **generation**: a real CraFT run's generations (one run, its work where ``--user-device``
  puts it): device busy time per generation, and from it the most sequences per second any
  number of interleaved runs could reach on this device, every kernel of theirs unchanged
  (``gpu_bound_sequences_per_s``: a generation's sequences / its device-busy seconds); the
  thread's operations per generation and those that took its time.
* **pass sizes**: raw throughput with the candidates of 1, 4 and 10 runs in one pass: how much
  merging concurrent runs' queries into one pass (a model server's :class:`QueryBatcher`) can
  gain on this device.

* **loops' device busy share**: each measured loop's generations a second times the profiled
  generation's device time: near 1 the device bounds the loop, well below its thread does.

On a CPU there is no device time: the operations are ranked by the CPU time they took. With
``--profile-traces DIR`` the generations' timelines are written too (one gzipped Chrome trace a
path), for a look at what ran when, after the GPU is gone.

``python -m measurement.profile PERF.json`` prints the profile of a ``craft perf --json``
file again, with the loops' device busy share computed from it (also for files written before
``craft perf`` computed it).
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from measurement.loops import _craft_config, measure_raw, sync, warmup_for

TOP = 12  # operations listed per profile


def _activities(device: torch.device) -> list[ProfilerActivity]:
    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])


def _device_events(prof: profile) -> list[Any]:
    """The profile's kernels, copies and fills on a GPU (none on a CPU)."""
    return [e for e in prof.events() if e.device_type == DeviceType.CUDA]


def _ranked(totals: dict[str, float], counts: dict[str, int], whole: float, top: int) -> list[dict[str, Any]]:
    """The ``top`` names by time: seconds, share of ``whole`` and calls."""
    names = sorted(totals, key=totals.get, reverse=True)[:top]
    return [{"name": n[:120], "seconds": totals[n], "share": totals[n] / whole if whole else 0.0, "calls": counts[n]}
            for n in names]


def summarise(prof: profile, device: torch.device, wall_s: float, units: int, top: int = TOP) -> dict[str, Any]:
    """Per ``units`` (calls or generations): wall, device-busy seconds, kernels, the operations the code
    called (``host_ops``) and the CPU time of all torch operations; the top device operations (GPU)
    and the top host operations by their own CPU time."""
    out: dict[str, Any] = {"wall_s": wall_s / units}
    kernels = _device_events(prof)
    if kernels:
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for e in kernels:
            totals[e.name] += e.time_range.elapsed_us() / 1e6
            counts[e.name] += 1
        busy = sum(totals.values())
        out |= {"device_busy_s": busy / units, "device_busy_share": busy / wall_s if wall_s else None,
                "device_ops": len(kernels) / units, "device_top": _ranked(totals, counts, busy, top)}
    host = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    cpu_total = sum(e.self_cpu_time_total for e in host) / 1e6
    # The operations the code called (an aten op's own aten calls, as linear's addmm, not counted again).
    called = [e for e in prof.events() if e.name.startswith("aten::") and e.device_type == DeviceType.CPU
              and not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    out |= {
        "host_ops": len(called) / units, "host_op_cpu_s": cpu_total / units,
        "host_top": _ranked({e.key: e.self_cpu_time_total / 1e6 for e in host}, {e.key: e.count for e in host},
                            cpu_total, top),
    }
    return out


def profile_pass(engine, classnames: list[str], contexts: torch.Tensor, calls: int = 3) -> dict[str, Any]:
    """``calls`` raw calls of a warm engine, profiled; figures per call."""
    part = engine.class_part(classnames)
    for _ in range(warmup_for(engine, 1)):  # warm (a compiled engine compiled in an earlier call)
        engine.text_features(contexts, part)
    sync(engine.device)
    with profile(activities=_activities(engine.device)) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            engine.text_features(contexts, part)
        sync(engine.device)
        wall = time.perf_counter() - t0
    return {"sequences": contexts.shape[0] * len(classnames), "calls": calls, **summarise(prof, engine.device, wall, calls)}


def profile_generations(engine, data, task, popsize: int, intrinsic_dim: int, user: torch.device | str,
                        warmup: int = 1, generations: int = 2, trace: str | Path | None = None) -> dict[str, Any]:
    """One CraFT run on ``engine``: ``generations`` generations after ``warmup``, profiled; figures
    per generation (from one generation's candidates queued to the next's). ``trace``: also write the
    profile's timeline there, gzipped Chrome trace JSON (Perfetto, chrome://tracing)."""
    from benchmark.model.engine import EngineBackend
    from craft.blackbox import MeteredBlackBox
    from craft.methods import get_method

    warmup = warmup_for(engine, warmup)
    total = warmup + generations + 1  # the last evaluates: outside the window
    cfg = _craft_config(popsize, intrinsic_dim, len(task.classnames), total)
    box = MeteredBlackBox(EngineBackend(engine, data, user), popsize * total)
    steps = get_method("craft").steps(box, task, cfg, 0)

    def until(queries: int) -> None:  # step until the run has queued that many candidates
        while box.usage.queries < queries:
            next(steps)

    until(popsize * (warmup + 1))
    sync(engine.device)
    before = box.usage.text_sequences
    with profile(activities=_activities(engine.device)) as prof:
        t0 = time.perf_counter()
        until(popsize * (warmup + 1 + generations))
        sync(engine.device)
        wall = time.perf_counter() - t0
    sequences = (box.usage.text_sequences - before) / generations
    for _ in steps:  # the rest of the run, unprofiled
        pass
    out = {"user_device": str(box.info.device), "generations": generations, "sequences_per_generation": sequences,
           **summarise(prof, engine.device, wall, generations)}
    if trace is not None:
        out["trace"] = str(write_trace(prof, trace))
    if out.get("device_busy_s"):
        out["gpu_bound_sequences_per_s"] = sequences / out["device_busy_s"]
    return out


def write_trace(prof: profile, path: str | Path) -> Path:
    """The profile's timeline as gzipped Chrome trace JSON at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(raw))
        with raw.open("rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return path


def pass_sizes(engine, classnames: list[str], contexts: torch.Tensor, multiples: tuple[int, ...] = (1, 4, 10),
               repeats: int = 3) -> list[dict[str, Any]]:
    """Raw sequences/s with ``contexts`` repeated 1, 4 and 10 times in one call (the candidates of
    that many runs merged): :func:`measurement.loops.measure_raw`, one untimed call first."""
    rows = []
    for m in multiples:
        raw = measure_raw({"pass": engine}, classnames, contexts.repeat(m, 1, 1), {"pass": 1}, repeats)["pass"]
        if "error" in raw:
            raise RuntimeError(f"a pass of {m} runs' candidates: {raw['error']}")
        rows.append({"runs_merged": m, "sequences_per_call": raw["sequences_per_call"],
                     "sequences_per_s": raw["sequences_per_s"]})
    return rows


def loops_device_busy(generation: dict[str, Any], loops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """How busy each measured loop kept the device: the profiled generation's device time times the
    loop's generations a second (all its runs'), for the loops whose runs worked where the profiled
    one did. Near 1 the GPU bounds the loop; well below, the loop's thread does (its waits say the
    same from the thread's side). Assumes a generation's device work does not depend on its loop."""
    busy = generation.get("device_busy_s")
    if not busy:
        return []
    return [{"runs": x["runs"], "cma_workers": bool(x.get("cma_workers")),
             "device_busy_share": busy * x["generations_per_s"]}
            for x in loops if "generations_per_s" in x and x.get("user_device", "cpu") == generation["user_device"]]


def render(name: str, p: dict[str, Any]) -> list[str]:
    """Report lines for one path's profile."""
    lines = []
    if "error" in p:
        return [f"profile {name}: error: {p['error']}"]
    ps = p.get("pass")
    if ps:
        busy = f", device busy {ps['device_busy_s']:.4f} s in {ps['device_ops']:.0f} operations" if "device_busy_s" in ps else ""
        lines.append(f"profile {name}: a pass of {ps['sequences']:,} sequences took {ps['wall_s']:.4f} s{busy}, "
                     f"{ps['host_ops']:.0f} host operations")
        lines += _top_lines(ps)
    g = p.get("generation")
    if g:
        busy = ""
        if "device_busy_s" in g:
            busy = (f", device busy {g['device_busy_s']:.4f} s ({100 * g['device_busy_share']:.0f}%) in "
                    f"{g['device_ops']:.0f} operations: with the device always busy, at most "
                    f"{g['gpu_bound_sequences_per_s']:,.0f} sequences/s")
        lines.append(f"  a CraFT generation (work on {g['user_device']}): {g['wall_s']:.4f} s profiled{busy}; "
                     f"the thread: {g['host_ops']:.0f} operations, {g['host_op_cpu_s']:.4f} s in them"
                     + (f"; timeline in {g['trace']}" if g.get("trace") else ""))
        lines += _top_lines(g)
    if p.get("loops_device_busy"):
        lines.append("  the loops kept the device busy about: " + ", ".join(
            f"{x['runs']} run{'s' if x['runs'] > 1 else ''}{' (CMA-ES in workers)' if x['cma_workers'] else ''} "
            f"{100 * x['device_busy_share']:.0f}%" for x in p["loops_device_busy"]))
    sizes = p.get("pass_sizes")
    if sizes:
        lines.append("  runs merged into one pass: " + ", ".join(
            f"{r['runs_merged']}: {r['sequences_per_s']:,.0f} seq/s" for r in sizes))
    return lines


def _top_lines(p: dict[str, Any], n: int = 5) -> list[str]:
    key = "device_top" if "device_top" in p else "host_top"
    where = "device" if key == "device_top" else "host CPU"
    return [f"    {where}: " + "; ".join(f"{100 * t['share']:.0f}% {t['name'][:60]} (x{t['calls']})" for t in p[key][:n])]


def main(argv: list[str] | None = None) -> int:
    """Print the profiles of a ``craft perf --json`` file."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m measurement.profile", description=main.__doc__)
    parser.add_argument("json", help="a file written by craft perf --profile --json")
    args = parser.parse_args(argv)
    try:
        result = json.loads(Path(args.json).read_text())
    except (OSError, ValueError) as exc:
        parser.error(f"{args.json}: cannot read it as JSON ({exc})")
    profiles = result.get("profile") if isinstance(result, dict) else None
    if not profiles:
        parser.error(f"{args.json}: no 'profile' in it (written by craft perf without --profile?)")
    for name, prof in profiles.items():
        if "generation" in prof and "loops_device_busy" not in prof:
            prof["loops_device_busy"] = loops_device_busy(prof["generation"], result["paths"].get(name, {}).get("loop", []))
        print("\n".join(render(name, prof)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
