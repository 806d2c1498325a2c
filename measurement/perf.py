"""``craft perf``: query throughput of the official-style path against the fast path, side by side.

One invocation loads one backbone on one device and measures, for each query path (the
official code's way: one candidate a call, fp32, 77 tokens; the fast path; the fast path
``torch.compile``-d with ``--compile``):

* raw text-tower throughput: text sequences per second for ``candidates x classes`` prompts
  of a ``paper-shapes`` dataset (one CraFT generation's worth: popsize 40 x C);
* a real CraFT loop (pycma ask/tell at dimension 512, popsize 40, the queries, the fitness,
  the refinement epoch) on that dataset's shapes: generations per second and the text
  sequences per second sustained inside it, with ``--runs`` loops interleaved in one thread on
  one engine (:mod:`craft.interleave`, as a GPU model server runs colocated runs);
* peak memory (CUDA ``max_memory_allocated``; on CPU the process's peak RSS);
* the fast/official ratios, and an estimate of the wall time of the full 11-dataset x
  3-seed 16-shot CraFT sweep on this device.

Image features are random unit vectors of the dataset's sizes: query speed does not depend on
their values (nor on the weights: ``--weights random`` is enough).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from benchmark.model.engine import ATTENTION_KERNELS, PRECISIONS, uses_cuda_graphs
from measurement.official_path import OfficialEngine
from benchmark.errors import UserError
from measurement.loops import (
    SEEDS, agreement, amortised, cma_seconds, dataset_shapes, device_name, measure_eval, measure_loop, measure_raw, padded_classnames,
    sweep_datasets, sweep_row, sweep_rows_scaled, sweep_summary, synthetic_task, warmup_for,
)

IMAGE_NOTE = "random unit vectors of the dataset's sizes: query speed does not depend on their values"
CPU_TARGET, GPU_TARGET, GPU_SEQ_TARGET, SWEEP_TARGET_S = 3.0, 20.0, 150_000, 15 * 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="craft-tiny", help="open_clip architecture (default: craft-tiny)")
    p.add_argument("--weights", default=None, help="'random', 'builtin' (craft-tiny), a tag or a checkpoint (default: builtin for craft-tiny, else random)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dataset", default="paper-shapes/caltech101", help="paper-shapes dataset whose class count and sizes are used")
    p.add_argument("--prompt-tokens", type=int, default=20,
                   help="class names padded so that every prompt has this many tokens, SOS and EOS included "
                        "(capped at the model's context length; 0: the paper-shapes names as they are)")
    p.add_argument("--popsize", type=int, default=40, help="CMA-ES population: candidates per generation (default: 40)")
    p.add_argument("--intrinsic-dim", type=int, default=512, help="dimension CMA-ES searches in (default: 512)")
    p.add_argument("--candidates", type=int, default=None,
                   help="candidates per raw call (default: popsize on GPU; on CPU as many as take about --raw-seconds)")
    p.add_argument("--raw-seconds", type=float, default=5.0, help="CPU: target duration of one fast raw call")
    p.add_argument("--repeats", type=int, default=None, help="timed raw calls per path (default: 5 on GPU; on CPU 7 if a fast call takes under a second, else 2)")
    p.add_argument("--generations", type=int, default=3, help="timed CraFT generations per loop")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls / generations first (at least 2 on CUDA graphs)")
    p.add_argument("--runs", default="1",
                   help="comma-separated numbers of CraFT loops to measure interleaved in one thread (e.g. 1,4)")
    p.add_argument("--user-device", choices=("engine", "cpu", "both"), default="engine",
                   help="where the runs of a loop receive their logits and compute fitness and refinement: "
                        "engine (the engine's device: on a GPU the logits never leave it), cpu (copied to the host, "
                        "as from a remote model) or both, measured one after the other; the sweep estimate uses the first")
    p.add_argument("--cma-workers", choices=("off", "on", "both"), default="off",
                   help="interleaved fast-path loops (--runs above 1) and the sweep estimate's: each run's CMA-ES in "
                        "a worker process (on), in the loop's thread (off), or the loops measured both ways (both; "
                        "the sweep estimate then uses workers)")
    p.add_argument("--server-runs", default="",
                   help="comma-separated numbers of concurrent CraFT runs to measure as craft bench serves them: "
                        "each a Ray task (its own process, one CPU) against one model server actor that merges "
                        "their queries on a GPU (needs Ray; default: none)")
    p.add_argument("--max-generation-s", type=float, default=30.0,
                   help="skip a path's loop when its raw throughput predicts a longer generation")
    p.add_argument("--compile", action="store_true", help="also measure the fast path under torch.compile")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode(s), comma-separated, one compiled path each (default: fast_compiled; "
                        "other modes: fast_compiled_<mode>, e.g. reduce-overhead, whose CUDA graphs launch a "
                        "pass's kernels in one call on a GPU)"),
    p.add_argument("--no-official", action="store_true", help="skip the official-style path")
    p.add_argument("--attention", choices=ATTENTION_KERNELS, default="auto",
                   help="the fast paths' attention kernel (auto: torch's choice; python -m measurement.attention_backends "
                        "times each)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the fast paths' precision on a GPU: auto or bf16 (bf16 autocast), fp32 (CPUs: always fp32)")
    p.add_argument("--sweep", choices=("auto", "measure", "scale", "off"), default="auto",
                   help="sweep estimate: run each coop11 dataset's loop (measure), scale the main one (scale); auto: measure on GPU")
    p.add_argument("--sweep-generations", type=int, default=2, help="timed generations per dataset when measuring the sweep")
    p.add_argument("--sweep-runs", type=int, default=None,
                   help="measure mode: runs interleaved in each dataset's loop, the sweep then running a dataset's "
                        "seeds together (default: 3, the seeds, where the runs' work is on the GPU, as colocated "
                        "runs on a GPU server; else 1)")
    p.add_argument("--sweep-seconds", type=float, default=120.0,
                   help="measure mode: time for the per-dataset loops (smallest datasets first); the datasets whose "
                        "loop would not fit are scaled from the largest one measured")
    p.add_argument("--methods", default="",
                   help="also time each of these methods' own loop (comma-separated, e.g. bbt,craft,cbbt,bpt_vlm,blackvip,lfa): "
                        "images encoded and text sequences per second, on the fast path with random pixels of the "
                        "dataset's class count (--method-shots images a class)")
    p.add_argument("--method-shots", type=int, default=4, help="training images a class in --methods' task (default: 4)")
    p.add_argument("--profile", action="store_true",
                   help="profile each fast path (torch.profiler): a raw pass, a CraFT generation (with the device "
                        "time per generation, the bound of interleaved runs on a GPU) and raw throughput with "
                        "several runs' candidates merged into one pass (measurement/profile.py)")
    p.add_argument("--profile-traces", default=None, metavar="DIR",
                   help="with --profile: also write each path's profiled generations as a gzipped Chrome trace "
                        "(DIR/trace_<path>.json.gz; open in Perfetto or chrome://tracing)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 on a CPU device whose load average exceeds its cores)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the timed loops (default: 0)")
    p.add_argument("--json", default=None, help="write the figures here")


# ------------------------------------------------------------------------------- orchestration
@dataclass
class QueryPath:
    """One way of answering queries: an engine mode, compiled or not."""

    name: str
    mode: str
    compile: bool | str


def run(args: argparse.Namespace) -> int:
    """Measure every path side by side; print the report and write the JSON (after each phase)."""
    from benchmark.model.engine import ClipEngine
    from benchmark.model.loading import BUILTIN, RANDOM, load_model

    if args.sweep_runs is not None and args.sweep_runs < 1:
        raise UserError(f"--sweep-runs must be at least 1, got {args.sweep_runs}")
    if args.profile_traces:
        if not args.profile:
            raise UserError("--profile-traces writes the profile's timelines: it needs --profile")
        try:
            Path(args.profile_traces).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"--profile-traces {args.profile_traces}: cannot make the folder ({exc})") from None
    device = _resolve_device(args.device)
    threads_note = _set_threads(args.threads, device)
    runs_list = _parse_runs(args.runs)
    compile_modes = _parse_compile_modes(args.compile_mode, args.compile)
    server_runs = _parse_runs(args.server_runs, "--server-runs") if args.server_runs else []
    weights = args.weights or (BUILTIN if args.backbone == "craft-tiny" else RANDOM)
    shapes = dataset_shapes(args.dataset)
    torch.manual_seed(args.seed)
    loaded = load_model(args.backbone, weights, device)

    paths = [] if args.no_official else [QueryPath("official", "official", False)]
    paths.append(QueryPath("fast", "fast", False))
    if args.compile:
        paths += [QueryPath(compiled_path_name(mode), "fast", mode) for mode in compile_modes]
    engines = {p.name: OfficialEngine(loaded, device) if p.mode == "official" else
               ClipEngine(loaded, device, compile=p.compile, precision=args.precision, attention=args.attention)
               for p in paths}
    ref = engines["fast"]
    p0 = ref.embed_words("a photo of a")
    classnames = padded_classnames(loaded.tokenizer, shapes.classes, args.prompt_tokens, p0.shape[0], ref.context_length)
    part = ref.class_part(classnames)
    data, task = synthetic_task(ref, shapes, classnames, args.seed)
    contexts_all = p0 + 0.05 * torch.randn(args.popsize, *p0.shape, generator=torch.Generator().manual_seed(args.seed))

    result: dict[str, Any] = {
        "command": "craft perf " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["perf"] else sys.argv[1:]),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device_name(device), "device_type": device.type,
        "torch": torch.__version__, "open_clip": _version("open_clip_torch"), "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(), "cpu_threads_note": threads_note, "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backbone": args.backbone, "weights": weights, "dataset": shapes.key, "classes": shapes.classes,
        "train_images": shapes.train, "popsize": args.popsize, "intrinsic_dim": args.intrinsic_dim,
        "context_tokens": p0.shape[0], "prompt_tokens": 1 + p0.shape[0] + part.max_len + 1,
        "official_prompt_tokens": ref.context_length, "prefix_shared": ref.prefix_shared,
        "compile_mode": ",".join(compile_modes) if args.compile else None,
        "fast_precision": "bf16" if engines["fast"].bf16 else "fp32", "fast_attention": args.attention,
        "image_features": IMAGE_NOTE, "paths": {},
    }
    save = _saver(args.json, result)

    # 1. Raw throughput, calls of all paths interleaved. On CPU, size the call by a one-candidate probe.
    n_cand, probe_s = args.candidates, None
    if device.type != "cuda":
        t0 = time.perf_counter()
        ref.text_features(contexts_all[:1], part)
        probe_s = time.perf_counter() - t0
    if n_cand is None:
        n_cand = args.popsize if probe_s is None else max(1, min(args.popsize, int(args.raw_seconds / probe_s)))
    # Short CPU calls vary by 10-30% on a shared machine: take the median of more of them.
    repeats = args.repeats or (5 if probe_s is None else 7 if probe_s * n_cand < 1.0 else 2)
    _log(f"raw: {n_cand} candidates x {shapes.classes} classes, paths {', '.join(engines)}")
    # Compiled paths compile in their first call; on CPU the official path has nothing to warm.
    warm = {p.name: max(args.warmup if (p.mode == "fast" or device.type == "cuda") else 0, 1 if p.compile else 0)
            for p in paths}
    raw = measure_raw(engines, classnames, contexts_all[:n_cand], warm, repeats)
    for p in paths:
        e = raw[p.name]
        result["paths"][p.name] = {"mode": p.mode, "compile": p.compile, **({"error": e["error"]} if "error" in e else {"raw": e})}
    result["ratios"] = _ratios(result["paths"])
    agree = agreement(engines, classnames, contexts_all[: min(n_cand, 4)], data.features["train"])
    for name, a in agree.items():
        result["paths"][name]["vs_official"] = a
    save()

    # 2. The CraFT loop, per path and number of concurrent runs.
    seq_per_gen = (args.popsize + 1) * shapes.classes
    users = _user_devices(args.user_device, device)
    result["user_devices"] = [str(u) for u in users]
    for p in paths:
        entry = result["paths"][p.name]
        if "raw" in entry:
            entry["loop"] = [_loop(engines[p.name], data, task, args, runs, seq_per_gen / entry["raw"]["sequences_per_s"], p.name,
                                   user, workers)
                             for user in users for runs in runs_list for workers in _cma_settings(args.cma_workers, runs, p.mode)]
            result["ratios"] = _ratios(result["paths"])
            save()

    # 2b. Concurrent runs in their own processes against a model server, as craft bench runs them.
    if server_runs:
        ray_was_up = _ray_is_up()
        for runs in server_runs:
            result.setdefault("server", []).append(_server(args, weights, device, shapes, runs))
            result["ratios"] = _ratios(result["paths"], result.get("server", []))
            save()
        if not ray_was_up and _ray_is_up():  # the runtime the measurements started
            import ray

            ray.shutdown()

    # 2c. Each method's own loop: images encoded and text sequences per second.
    if args.methods:
        from measurement.method_loops import measure_methods

        names = [n.strip() for n in args.methods.split(",") if n.strip()]
        if args.method_shots < 1:
            raise UserError(f"--method-shots must be at least 1, got {args.method_shots}")
        _log(f"method loops: {', '.join(names)}")
        result["method_loops"] = measure_methods(ref, names, shapes.classes, args.method_shots, args.seed)
        save()

    # 2d. What a pass and a generation spend their time on.
    if args.profile:
        for p in paths:
            if p.mode == "fast" and "raw" in result["paths"][p.name]:
                prof = _profile(engines[p.name], classnames, contexts_all[:n_cand], data, task, args, users[0], p.name)
                if "generation" in prof:
                    from measurement.profile import loops_device_busy

                    prof["loops_device_busy"] = loops_device_busy(prof["generation"], result["paths"][p.name].get("loop", []))
                result.setdefault("profile", {})[p.name] = prof
                save()

    # 3. The sweep estimate, on the path a sweep runs.
    result["cma_seconds_per_generation"] = cma_seconds(args.intrinsic_dim, args.popsize)
    best = _sweep_path(result["paths"])
    if best and args.sweep != "off":
        mode = args.sweep if args.sweep != "auto" else ("measure" if device.type == "cuda" else "scale")
        _log(f"sweep estimate ({mode}) on {best}")
        try:
            def with_path(estimate: dict[str, Any]) -> dict[str, Any]:
                return estimate | {"path": best, "compile_s": _compile_seconds(result["paths"][best]),
                                   "compiled_graphs": _compiled_graphs()}

            def partial(estimate: dict[str, Any]) -> None:
                result["sweep_estimate"] = with_path(estimate)
                save()

            result["sweep_estimate"] = with_path(_sweep(
                engines[best], result["paths"][best], mode, shapes, data, task, args, result["cma_seconds_per_generation"],
                seq_per_gen, loaded.tokenizer, p0.shape[0], users[0], partial))
        except Exception as exc:  # noqa: BLE001 - keep the figures measured so far
            result["sweep_estimate"] = {"error": f"{type(exc).__name__}: {exc}"}
    if any(uses_cuda_graphs(p.compile or None) for p in paths):
        from torch._dynamo.utils import counters

        result["cudagraph_skips"] = int(counters["inductor"]["cudagraph_skips"])  # TORCH_LOGS=cudagraphs says why
    result["targets"] = _targets(result, device)
    save()
    print(render(result))
    if args.json:
        print(f"wrote {args.json}")
    return 0


def _log(msg: str) -> None:
    print(f"[perf] {msg}", file=sys.stderr, flush=True)


def _saver(path: str | None, result: dict[str, Any]):
    def save() -> None:
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(result, indent=1, default=float) + "\n")

    return save


def _set_threads(threads: int | None, device: torch.device) -> str:
    """Set torch's CPU threads: as asked; else 1 on a CPU device whose load exceeds its cores."""
    if threads:
        torch.set_num_threads(threads)
        return "--threads"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if device.type == "cpu" and load > (os.cpu_count() or 1):
        torch.set_num_threads(1)
        return (f"1: the load average ({load:.1f}) exceeds the {os.cpu_count()} cores, where threads of one "
                "operation wait on each other and smaller operations suffer most (--threads overrides)")
    return "torch's default"


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    return device


def _parse_runs(text: str, option: str = "--runs") -> list[int]:
    try:
        runs = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        runs = []
    if not runs or runs[0] < 1:
        raise UserError(f"{option} takes comma-separated positive integers, got {text!r}")
    return runs


def _parse_compile_modes(text: str | None, compile: bool) -> list[str]:
    """``--compile-mode``'s modes, checked against torch's before any model loads."""
    if text is not None and not compile:
        raise UserError(f"--compile-mode {text} chooses how --compile compiles: add --compile")
    modes = list(dict.fromkeys(m.strip() for m in (text or "default").split(",") if m.strip()))
    for mode in modes:
        try:
            uses_cuda_graphs(mode)
        except RuntimeError as exc:
            raise UserError(f"--compile-mode: {exc}") from None
    if not modes:
        raise UserError(f"--compile-mode takes comma-separated torch.compile modes, got {text!r}")
    return modes


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _ray_is_up() -> bool:
    try:
        import ray
    except ImportError:
        return False
    return ray.is_initialized()


def _server(args, weights: str, device: torch.device, shapes, runs: int) -> dict[str, Any]:
    """One --server-runs measurement, or why it failed."""
    _log(f"server: {runs} concurrent run(s), each its own process")
    try:
        from measurement.server_runs import measure_server

        return measure_server(args.backbone, weights, device, shapes.key, runs, args.popsize, args.intrinsic_dim,
                              args.generations, args.warmup, args.precision)
    except ImportError as exc:
        return {"runs": runs, "error": f"needs Ray ({exc})"}
    except Exception as exc:  # noqa: BLE001 - keep the figures measured so far
        return {"runs": runs, "error": f"{type(exc).__name__}: {exc}"}


def _user_devices(choice: str, device: torch.device) -> list[torch.device]:
    """The loops' user devices for ``--user-device`` (one on a CPU engine, where both are the CPU)."""
    engine, cpu = device, torch.device("cpu")
    users = {"engine": [engine], "cpu": [cpu], "both": [engine, cpu]}[choice]
    return list(dict.fromkeys(users))


def _cma_settings(choice: str, runs: int, mode: str) -> list[bool]:
    """Whether a loop's runs have CMA-ES workers, per measurement: only interleaved fast-path loops
    (one run gains nothing; the official path's loops are bound by its passes) are measured with them."""
    if runs == 1 or mode != "fast":
        return [False]
    return {"off": [False], "on": [True], "both": [False, True]}[choice]


def _loop(engine, data, task, args, runs: int, predicted_s: float, name: str, user: torch.device,
          cma_workers: bool = False) -> dict[str, Any]:
    """One loop measurement, or why it was skipped (too slow) or failed."""
    head = {"runs": runs, "user_device": str(user), "cma_workers": cma_workers}
    if predicted_s * runs > args.max_generation_s:
        return {**head, "predicted_generations_per_s": 1 / predicted_s, "skipped": (
            f"a generation would take about {predicted_s * runs:.0f} s at the raw throughput "
            f"(over --max-generation-s {args.max_generation_s:g})")}
    _log(f"loop {name}: {runs} run(s){' interleaved' if runs > 1 else ''}{', CMA-ES in workers' if cma_workers else ''}, "
         f"user side on {user}")
    try:
        return measure_loop(engine, data, task, args.popsize, args.intrinsic_dim, args.generations, args.warmup, runs, user,
                            cma_workers)
    except Exception as exc:  # noqa: BLE001 - one path failing must not lose the others
        return {**head, "error": f"{type(exc).__name__}: {exc}"}


def _profile(engine, classnames, contexts, data, task, args, user: torch.device, name: str) -> dict[str, Any]:
    """A path's profile (:mod:`measurement.profile`), or why it failed."""
    from measurement import profile

    _log(f"profile {name}")
    try:
        on_gpu = engine.device.type == "cuda"
        return {
            "pass": profile.profile_pass(engine, classnames, contexts),
            "generation": profile.profile_generations(
                engine, data, task, args.popsize, args.intrinsic_dim, user,
                trace=Path(args.profile_traces) / f"trace_{name}.json.gz" if args.profile_traces else None),
            "pass_sizes": profile.pass_sizes(engine, classnames, contexts, (1, 4, 10) if on_gpu else (1, 2),
                                                  3 if on_gpu else 1),
        }
    except Exception as exc:  # noqa: BLE001 - keep the figures measured so far
        return {"error": f"{type(exc).__name__}: {exc}"}


def _loop_at(entry: dict[str, Any], runs: int, user: str | None = None) -> dict[str, Any] | None:
    """The loop with ``runs`` runs (and, if given, that user device), CMA-ES in the loop's thread."""
    return next((x for x in entry.get("loop", []) if x.get("runs") == runs and "sequences_per_s" in x
                 and not x.get("cma_workers") and (user is None or x.get("user_device", "cpu") == user)), None)


def _loop_best(entry: dict[str, Any]) -> dict[str, Any] | None:
    done = [x for x in entry.get("loop", []) if "sequences_per_s" in x]
    return max(done, key=lambda x: x["sequences_per_s"]) if done else None


def _sweep_path(paths: dict[str, Any]) -> str | None:
    """The path the sweep estimate runs: the compiled fast path where it was measured (a sweep with
    ``compile: true`` runs it), else the fast path.

    A compiled engine serves every dataset's class count from the graph of its first call
    (:func:`benchmark.model.engine._one_graph`), so a sweep pays the compilation once per model server
    (on an H100, ViT-B-16's took 74 s): the estimate adds it (``compile_s``). Before one graph
    did, each new class count compiled again, and the recompile for EuroSAT's 10 classes used up
    the sweep estimate's window (docs/measurements/h100_caltech101_pad_mm_guards.json). With
    several compiled paths (``--compile-mode a,b``), the one fastest in the loop.
    """
    compiled = [k for k, e in paths.items() if e.get("compile") and "raw" in e]
    looped = [k for k in compiled if _loop_best(paths[k])]
    if looped:  # the fastest in the loop (a path whose loops failed is left out)
        return max(looped, key=lambda k: _loop_best(paths[k])["sequences_per_s"])
    if compiled:  # no loop measured: the fastest in raw throughput
        return max(compiled, key=lambda k: paths[k]["raw"]["sequences_per_s"])
    return "fast" if "raw" in paths.get("fast", {}) else None


def compiled_path_name(mode: str) -> str:
    """``fast_compiled`` for torch.compile's default mode, ``fast_compiled_<mode>`` for another."""
    return "fast_compiled" if mode == "default" else "fast_compiled_" + mode.replace("-", "_")


def _compiled_graphs() -> int:
    """Graphs torch.compile has made in this process so far: one per compiled path where every
    dataset's class count reuses its graph (_one_graph; with prefix sharing, the prefix-shared text
    function is the one compiled). More means recompilation, each about as long as compile_s."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _compile_seconds(entry: dict[str, Any]) -> float:
    """How much longer a compiled path's first call took than its later calls (0 uncompiled)."""
    raw = entry.get("raw", {})
    if not entry.get("compile") or "first_call_s" not in raw:
        return 0.0
    return max(0.0, raw["first_call_s"] - statistics.median(raw["seconds"]))


def _ratios(paths: dict[str, Any], server: list[dict[str, Any]] = ()) -> dict[str, float]:
    """Fast over official: raw wall time, raw CPU time, each loop over the official loop with the same
    number of runs and user device (with one run where that was not measured, e.g. skipped by
    --max-generation-s: the official code runs one at a time); each --server-runs measurement over
    one official run."""
    out: dict[str, float] = {}
    off = paths.get("official", {})
    for name, entry in paths.items():
        if name == "official":
            continue
        if "raw" in entry and "raw" in off:
            out[f"raw_{name}/official"] = entry["raw"]["sequences_per_s"] / off["raw"]["sequences_per_s"]
            out[f"raw_cpu_time_{name}/official"] = entry["raw"]["sequences_per_cpu_s"] / off["raw"]["sequences_per_cpu_s"]
        for x in entry.get("loop", []):
            user = x.get("user_device", "cpu")
            o = _loop_at(off, x.get("runs", 0), user) or _loop_at(off, 1, user)
            if o and "sequences_per_s" in x:
                tag = ("" if user == "cpu" else f"_user-{user.split(':')[0]}") + ("_cma-workers" if x.get("cma_workers") else "")
                out[f"loop_runs{x['runs']}{tag}_{name}/official"] = x["sequences_per_s"] / o["sequences_per_s"]
    one = _loop_at(paths.get("official", {}), 1, "cpu")
    for x in server:
        if one and "sequences_per_s" in x:
            out[f"server_runs{x['runs']}/official_loop_runs1"] = x["sequences_per_s"] / one["sequences_per_s"]
    return out


def _sweep(engine, entry, mode, shapes, data, task, args, cma_s, seq_per_gen, tokenizer, n_ctx, user: torch.device,
           partial: Callable[[dict[str, Any]], None] = lambda _: None) -> dict[str, Any]:
    mine = {**entry, "loop": [x for x in entry.get("loop", []) if x.get("user_device", "cpu") == str(user)]}
    one, most = _loop_at(mine, 1), _loop_best(mine)
    speedup = most["sequences_per_s"] / one["sequences_per_s"] if one and most and most["runs"] > 1 else None
    if mode == "measure":
        return _sweep_measured(engine, args, cma_s, tokenizer, n_ctx, speedup, user, partial)
    loop = one or {
        "query_seconds_per_generation": seq_per_gen / entry["raw"]["sequences_per_s"],
        "runner_seconds_per_generation": cma_s,
    }
    eval_s = measure_eval(engine, data, task, args.intrinsic_dim, user) if one else 0.0
    out = sweep_summary(sweep_rows_scaled(shapes, loop, eval_s, cma_s, args.popsize, str(user)), mode,
                        speedup, str(user))
    if not one:
        out["note"] = ("the loop was not measured on this device: query time from the raw throughput, runner time "
                       "= CMA-ES alone (fitness and refinement left out), evaluations left out")
    return out


def _sweep_measured(engine, args, cma_s, tokenizer, n_ctx, speedup, user, partial) -> dict[str, Any]:
    """Each coop11 dataset's loop at its shapes, smallest first, within ``--sweep-seconds``; the rest
    scaled from the largest dataset measured (rows say which). Reports the estimate after each row.

    With ``--sweep-runs N`` each loop interleaves N runs and a row holds the time of a generation
    amortised over them (a round of N generations / N), its evaluations N times over."""
    runs = args.sweep_runs or (SEEDS if user.type == "cuda" else 1)
    workers = runs > 1 and args.cma_workers != "off"
    order = sorted(sweep_datasets(), key=lambda d: d.classes * d.train)
    warmup = warmup_for(engine, 1)  # generations measure_loop runs untimed first
    deadline = time.perf_counter() + args.sweep_seconds
    measured: dict[str, dict[str, Any]] = {}
    base = None  # (shapes, loop, eval seconds) of the largest dataset measured so far
    for d in order:
        if base is not None:  # predict this dataset's loop (warmup, timed, final generation) from base's
            scaled = sweep_rows_scaled(*base, cma_s, args.popsize, str(user))
            predicted = runs * next(r for r in scaled if r["dataset"] == d.key)["seconds_per_generation"]
            if time.perf_counter() + predicted * (warmup + args.sweep_generations + 1) > deadline:
                break
        names = padded_classnames(tokenizer, d.classes, args.prompt_tokens, n_ctx, engine.context_length)
        d_data, d_task = synthetic_task(engine, d, names, args.seed)
        _log(f"sweep {d.key}" + (f", {runs} runs interleaved" if runs > 1 else ""))
        loop = amortised(measure_loop(engine, d_data, d_task, args.popsize, args.intrinsic_dim,
                                      args.sweep_generations, 1, runs, user, workers))
        ev = measure_eval(engine, d_data, d_task, args.intrinsic_dim, user)
        measured[d.key] = sweep_row(d, args.popsize, loop["seconds_per_generation"], loop["query_seconds_per_generation"], ev)
        base = (d, loop, ev)
        del d_data, d_task
        partial(_measured_summary(order, measured, base, cma_s, args.popsize, speedup, user, runs, workers))
    return _measured_summary(order, measured, base, cma_s, args.popsize, speedup, user, runs, workers)


def _measured_summary(order, measured, base, cma_s, popsize, speedup, user, runs: int = 1,
                      workers: bool = False) -> dict[str, Any]:
    scaled = {r["dataset"]: r for r in sweep_rows_scaled(*base, cma_s, popsize, str(user))} if base else {}
    rows = [{**measured[d.key], "measured": True} if d.key in measured else {**scaled[d.key], "measured": False}
            for d in order if d.key in measured or d.key in scaled]
    out = sweep_summary(rows, "measure", None if runs > 1 else speedup, str(user), interleaved_runs=runs)
    out["cma_workers"] = workers
    if len(measured) < len(order):
        out["scaled_from"] = base[0].key if base else None
    return out


def _together(sweep: dict[str, Any]) -> str:
    n = sweep.get("interleaved_runs", 1)
    return "one run at a time" if n == 1 else f"one dataset at a time, {n} runs interleaved"


def _targets(result: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The issue's targets: on CPU fast >= 3x official; on a GPU >= 150k seq/s in the loop, >= 20x, sweep <= 15 min."""
    r = result.get("ratios", {})
    raw = max((v for k, v in r.items() if k.startswith("raw_") and "cpu_time" not in k), default=None)
    loop = max((v for k, v in r.items() if k.startswith("loop_")), default=None)
    out: dict[str, Any] = {"raw_ratio": raw, "loop_ratio": loop}
    if device.type != "cuda":
        return out | {"ratio_target": CPU_TARGET, "met": bool(raw and raw >= CPU_TARGET)}
    loops = [_loop_best(e)["sequences_per_s"] for e in result["paths"].values() if e.get("mode") == "fast" and _loop_best(e)]
    loops += [x["sequences_per_s"] for x in result.get("server", []) if "sequences_per_s" in x]
    best = max(loops, default=None)
    sweep = result.get("sweep_estimate", {})
    wall = sweep.get("concurrent_s", sweep.get("serial_s"))
    if wall is not None:
        wall += sweep.get("compile_s", 0.0)
    return out | {
        "loop_sequences_per_s": best, "loop_sequences_per_s_target": GPU_SEQ_TARGET,
        "ratio_target": GPU_TARGET, "sweep_s": wall, "sweep_s_target": SWEEP_TARGET_S,
        "met": bool(best and best >= GPU_SEQ_TARGET and loop and loop >= GPU_TARGET and wall and wall <= SWEEP_TARGET_S),
    }


def _fmt(x: Any) -> str:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return "-" if x is None else str(x)
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.3g}"


def render(result: dict[str, Any]) -> str:
    """A short text report of the figures."""
    lines = [
        f"craft perf: {result['backbone']} ({result['weights']}) on {result['device']} [{result['device_type']}], "
        f"torch {result['torch']}, {result['cpu_threads']} CPU threads ({result['cpu_threads_note']}), "
        f"load average at start {[round(x, 1) for x in result['load_average_at_start'] or []]}",
        f"dataset {result['dataset']}: {result['classes']} classes, {result['train_images']} training images; "
        f"prompts of {result['prompt_tokens']} tokens (official path: {result['official_prompt_tokens']}); "
        f"popsize {result['popsize']}, intrinsic dim {result['intrinsic_dim']}; fast path in {result.get('fast_precision', 'fp32')}; "
        f"image features: {IMAGE_NOTE}",
        "",
        f"{'path':<14} {'raw seq/s':>11} {'user':>6} {'loop runs':>9} {'gen/s':>8} {'loop seq/s':>11} {'query s/gen':>11} "
        f"{'peak MiB':>9} {'waits: GPU':>10} {'CMA':>5}",
    ]
    for name, e in result["paths"].items():
        if "error" in e:
            lines.append(f"{name:<14} error: {e['error']}")
            continue
        raw = e["raw"]
        for i, x in enumerate(e.get("loop") or [{}]):
            head = (f"{name:<14} {_fmt(raw['sequences_per_s']):>11}" if i == 0 else " " * 26) + f" {x.get('user_device', '-'):>6}"
            if "skipped" in x or "error" in x:
                lines.append(f"{head} {x['runs']:>9} {'skipped' if 'skipped' in x else 'error':>8}  {x.get('skipped') or x.get('error')}")
                continue
            peak = max(raw["peak_mem_mib"], x.get("peak_mem_mib", 0.0))
            runs = f"{x.get('runs')}{'w' if x.get('cma_workers') else ''}"
            waits = x.get("blocked_share", {})
            lines.append(f"{head} {runs:>9} {_fmt(x.get('generations_per_s')):>8} "
                         f"{_fmt(x.get('sequences_per_s')):>11} {_fmt(x.get('query_seconds_per_generation')):>11} {_fmt(peak):>9} "
                         f"{waits.get('device', 0.0):>10.2f} {waits.get('cma_worker', 0.0):>5.2f}")
    for x in result.get("server", []):
        what = f"server, {x['runs']} run process{'es' if x['runs'] > 1 else ''}"
        if "error" in x:
            lines.append(f"{what}: error: {x['error']}")
            continue
        merged = (f"; {x['batched_requests']} queries in {x['batched_passes']} passes"
                  if x.get("batched_passes") else "")
        lines.append(f"{what}: {_fmt(x['generations_per_s'])} gen/s, {_fmt(x['sequences_per_s'])} seq/s, "
                     f"{_fmt(x['seconds_per_generation'])} s/generation ({_fmt(x['query_seconds_per_generation'])} "
                     f"in calls), overlap {x['overlap']:.2f}{merged}")
    lines.append("waits: share of a loop's timed span its thread spent waiting for the GPU's results and for "
                 "CMA-ES workers (little waiting: the thread, not the GPU, bounds the loop)")
    if result.get("method_loops"):
        from measurement.method_loops import render_methods

        lines += ["", "each method's own loop (fast path; images: encoded by its queries):"]
        lines += render_methods(result["method_loops"])
    if result.get("profile"):
        from measurement import profile

        lines.append("")
        for name, prof in result["profile"].items():
            lines += profile.render(name, prof)
    lines.append("")
    for name, e in result["paths"].items():
        a = e.get("vs_official")
        if a and "error" not in a:
            lines.append(f"{name} against official: text features {a['features_rel_err']:.2e} relative error, "
                         f"logits {a['logits_rel_err']:.2e}, same top-1 class {100 * a['top1_agreement']:.2f}%")
    lines += [f"ratio {k}: {v:.2f}x" for k, v in result.get("ratios", {}).items()]
    sweep = result.get("sweep_estimate")
    if sweep and "error" not in sweep:
        conc = f", {sweep['concurrent_s'] / 60:.1f} min with concurrent runs" if "concurrent_s" in sweep else ""
        n_measured = sum(1 for r in sweep["datasets"] if r.get("measured"))
        how = sweep["mode"] if "scaled_from" not in sweep else (
            f"measure: {n_measured} datasets measured, {len(sweep['datasets']) - n_measured} scaled from {sweep['scaled_from']}")
        compiled = (f", plus {sweep['compile_s'] / 60:.1f} min compiling once ({sweep.get('compiled_graphs', '?')} "
                    f"graphs compiled in this process)" if sweep.get("compile_s") else "")
        lines.append(f"11-dataset x 3-seed 16-shot CraFT sweep ({how}, {sweep.get('path', 'fast')} path): "
                     f"{sweep['serial_s'] / 60:.1f} min {_together(sweep)}{conc}{compiled}; "
                     f"{sweep['query_bound_s'] / 60:.1f} min inside black-box calls; "
                     f"runs' own work on {sweep.get('user_device', 'cpu')}")
    elif sweep:
        lines.append(f"sweep estimate: error: {sweep['error']}")
    t = result.get("targets", {})
    if "cudagraph_skips" in result:
        lines.append(f"CUDA graphs skipped: {result['cudagraph_skips']} compiled graph(s) ran without them"
                     + (" (a CPU has none)" if result.get("device_type") == "cpu" else
                        " (TORCH_LOGS=cudagraphs says why)" if result["cudagraph_skips"] else ""))
    lines.append(f"targets met: {t.get('met')} ({', '.join(f'{k}={_fmt(v)}' for k, v in t.items() if k != 'met')})")
    return "\n".join(lines)


if __name__ == "__main__":  # ``python -m measurement.perf ARGS``: ``craft perf`` where its entry point is not installed
    from benchmark.cli import run_command
    from measurement.commands import PERF

    sys.exit(run_command("perf", PERF[0], PERF[1], sys.argv[1:]))
