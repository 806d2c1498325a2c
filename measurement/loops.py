"""The measurements behind ``craft perf``: raw text-tower throughput, a timed CraFT loop, the sweep estimate.

Image features are random unit vectors of a dataset's sizes: query speed does not depend on their
values. Every function takes engines built by the caller, so that all paths share one model.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from benchmark.errors import UserError
from benchmark.memory import peak_memory

SEEDS = 3
SHOTS = 16
EVAL_EVERY = 10  # CraFTConfig's default: val and test scored every 10 generations


# ------------------------------------------------------------------------------- device and memory
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


# ------------------------------------------------------------------------------- synthetic task
@dataclass
class Shapes:
    """One dataset's sizes for a 16-shot run."""

    key: str
    classes: int
    train: int
    val: int
    test: int


def dataset_shapes(key: str) -> Shapes:
    """Sizes of a paper-shapes dataset (``caltech101`` or ``paper-shapes/caltech101``)."""
    from benchmark.datasets.registry import SYNTHETIC_PREFIX, get_spec

    spec = get_spec(key if key.startswith(SYNTHETIC_PREFIX) else SYNTHETIC_PREFIX + key)
    if spec.test_only:
        raise UserError(f"dataset {spec.key} is test-only: CraFT trains on {spec.parent}")
    from benchmark.datasets.synthetic import VAL_PER_CLASS

    return Shapes(spec.key, spec.classes, SHOTS * spec.classes, VAL_PER_CLASS * spec.classes, spec.test_images)


def padded_classnames(tokenizer, n_classes: int, prompt_tokens: int, n_ctx: int, context_length: int) -> list[str]:
    """``"class <i>"`` padded with words so every prompt ``[SOS] ctx name. [EOS]`` has ``prompt_tokens`` tokens."""
    names = [f"class {i}" for i in range(n_classes)]
    if prompt_tokens <= 0:
        return names
    target = min(prompt_tokens, context_length) - 2 - n_ctx  # tokens of "name."
    lengths = (tokenizer([f"{n}." for n in names]) != 0).sum(1) - 2
    return [n + " x" * max(0, target - int(k)) for n, k in zip(names, lengths)]


def synthetic_task(engine, shapes: Shapes, classnames: list[str], seed: int):
    """(TaskData with random unit image features on the engine's device, craft Task with labels)."""
    from benchmark.model.engine import TaskData, TrainViews
    from craft.methods import Task

    g = torch.Generator().manual_seed(seed)
    embed = engine.template_features("{}", classnames[:1]).shape[-1]
    c = shapes.classes
    labels = {
        "train": torch.arange(c).repeat_interleave(SHOTS),
        "val": torch.arange(c).repeat_interleave(shapes.val // c),
        "test": torch.arange(shapes.test) % c,
    }
    feats = {k: F.normalize(torch.randn(len(v), embed, generator=g), dim=-1).to(engine.device) for k, v in labels.items()}
    task = Task(shapes.key, classnames, "a photo of a {}.", labels, shots=SHOTS)

    def view(v: int) -> tuple[torch.Tensor, int]:  # random raw features: the text side is what is measured
        gv = torch.Generator().manual_seed(seed * 1_000_003 + v)
        return torch.randn(len(labels["train"]), embed, generator=gv).to(engine.device), 0

    return TaskData(classnames, "a photo of a {}.", feats, train_views=TrainViews(view, varies=True)), task


def warmup_for(engine, warmup: int) -> int:
    """Untimed calls (or generations) before timing ``engine``: ``warmup``, and at least 2 where it
    replays CUDA graphs, since torch runs each new pass size once as compiled code, records it as a
    graph in its second call and replays it from the third. Every measurement here applies it."""
    from benchmark.model.engine import uses_cuda_graphs

    graphs = engine.device.type == "cuda" and uses_cuda_graphs(engine.compile_mode)
    return max(warmup, 2) if graphs else warmup


# ------------------------------------------------------------------------------- raw throughput
def measure_raw(
    engines: dict[str, Any], classnames: list[str], contexts: torch.Tensor, warmup: dict[str, int], repeats: int
) -> dict[str, dict[str, Any]]:
    """Text sequences per second of each engine's ``text_features`` on ``contexts``, calls interleaved.

    Each repeat times one call of every path (in alternating order), so that a change of load on
    the machine hits all paths alike. Reports the median wall time and the median process CPU
    time per call (the CPU time is less sensitive to other processes on a shared CPU).
    """
    n_seq = contexts.shape[0] * len(classnames)
    out: dict[str, dict[str, Any]] = {}
    live = []
    for name, eng in engines.items():
        part = eng.class_part(classnames)
        try:
            first = None
            for _ in range(warmup_for(eng, warmup.get(name, 0))):
                t0 = time.perf_counter()
                eng.text_features(contexts, part)
                sync(eng.device)
                first = first if first is not None else time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - one path failing must not lose the others
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out[name] = {"candidates": contexts.shape[0], "classes": len(classnames), "sequences_per_call": n_seq,
                     "first_call_s": first, "seconds": [], "cpu_seconds": [], "peak_mem_mib": 0.0}
        live.append(name)
    for r in range(repeats):
        for name in live if r % 2 == 0 else live[::-1]:
            eng, entry = engines[name], out[name]
            with peak_memory(eng.device, resident_bytes=None) as mem:
                c0, t0 = time.process_time(), time.perf_counter()
                eng.text_features(contexts, eng.class_part(classnames))
                sync(eng.device)
                entry["seconds"].append(time.perf_counter() - t0)
                entry["cpu_seconds"].append(time.process_time() - c0)
            entry["peak_mem_mib"] = max(entry["peak_mem_mib"], mem.mb)
            entry["peak_mem_kind"] = mem.how
    for name in live:
        e = out[name]
        e["sequences_per_s"] = n_seq / statistics.median(e["seconds"])
        e["sequences_per_cpu_s"] = n_seq / statistics.median(e["cpu_seconds"])
    return out


def agreement(engines: dict[str, Any], classnames: list[str], contexts: torch.Tensor, images: torch.Tensor) -> dict[str, dict[str, float]]:
    """Each non-official path's outputs against the official path's on ``contexts``.

    ``features_rel_err``: relative L2 error of the normalised text features; ``logits_rel_err``:
    of the logits on ``images``; ``top1_agreement``: share of (candidate, image) pairs whose
    predicted class is the same.
    """
    if "official" not in engines:
        return {}
    ref_engine = engines["official"]
    ref = ref_engine.text_features(contexts, ref_engine.class_part(classnames)).float()
    ref_logits = ref_engine.logits(images, ref)
    out = {}
    for name, eng in engines.items():
        if name == "official":
            continue
        try:
            feats = eng.text_features(contexts, eng.class_part(classnames)).float()
        except Exception as exc:  # noqa: BLE001 - reported as that path's error by measure_raw
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        logits = eng.logits(images, feats)
        out[name] = {
            "features_rel_err": float((feats - ref).norm() / ref.norm()),
            "logits_rel_err": float((logits - ref_logits).norm() / ref_logits.norm()),
            "top1_agreement": float((logits.argmax(-1) == ref_logits.argmax(-1)).float().mean()),
        }
    return out


# ------------------------------------------------------------------------------- CraFT loop
def _timed_box_cls():
    from craft.blackbox import MeteredBlackBox

    class TimedBox(MeteredBlackBox):
        """A metered black box that records the start, end and size of every logits call (a
        ``logits_many`` call is one, budgeted if any of its queries is)."""

        def __init__(self, backend, budget: int) -> None:
            super().__init__(backend, budget)
            self.calls: list[tuple[float, float, bool, int]] = []

        def logits(self, contexts, split="train", indices=None, *, budgeted=True):
            return self._timed(budgeted, MeteredBlackBox.logits, contexts, split, indices, budgeted=budgeted)

        def logits_many(self, queries, split="train"):
            return self._timed(any(b for _, b in queries), MeteredBlackBox.logits_many, queries, split)

        def _timed(self, any_budgeted: bool, call, /, *args, **kwargs):
            t0 = time.perf_counter()
            before = self.usage.text_sequences
            out = call(self, *args, **kwargs)
            self.calls.append((t0, time.perf_counter(), any_budgeted, self.usage.text_sequences - before))
            return out

    return TimedBox


def _craft_config(popsize: int, intrinsic_dim: int, classes: int, generations: int):
    from craft.methods import make_config

    return make_config("craft", {
        "popsize": popsize, "intrinsic_dim": intrinsic_dim, "budget": popsize * generations,
        "eval_every": generations, "hidden": 512 if classes >= 1000 else 256,
    })


def _generations(calls: list[tuple[float, float, bool, int]], first: int, count: int) -> list[dict[str, float]]:
    """Generations ``first .. first+count-1``: each from its budgeted call to the next one."""
    starts = [i for i, c in enumerate(calls) if c[2]]
    rows = []
    for g in range(first, first + count):
        a, b = starts[g], starts[g + 1]
        window = calls[a:b]
        rows.append({
            "start": calls[a][0], "end": calls[b][0], "seconds": calls[b][0] - calls[a][0],
            "query_seconds": sum(c[1] - c[0] for c in window), "sequences": sum(c[3] for c in window),
        })
    return rows


def measure_loop(engine, data, task, popsize: int, intrinsic_dim: int, generations: int, warmup: int, runs: int,
                 user_device: torch.device | str = "cpu", cma_workers: bool = False) -> dict[str, Any]:
    """``runs`` CraFT runs on one engine, interleaved in one thread (:mod:`craft.interleave`, as a
    GPU model server runs colocated runs); per-generation times after ``warmup``.

    ``user_device``: where the runs receive their logits and compute fitness and refinement
    (``cpu``: copied to the host, as from a remote model; the engine's GPU: they stay there).
    A generation runs from one budgeted call of a run to its next; with the work on a GPU a call
    returns once its work is queued, so the time a generation waits for the GPU falls outside it.
    ``cma_workers``: each run's CMA-ES in a worker process (:class:`craft.cma_es.CMAWorkers`,
    started during the runs' set-up, before the timed generations).

    ``blocked_share``: the share of the timed span the loop's thread spent waiting, per kind
    (:mod:`craft.waits`): ``device`` for results of the GPU (a run's own copies, and logits copied to
    the host when ``user_device`` is the CPU), ``cma_worker`` for CMA-ES workers.
    Little waiting means the thread's own work bounds the runs; much waiting for the device, the GPU.
    """
    from threadpoolctl import threadpool_limits

    from benchmark.model.engine import EngineBackend
    from craft.cma_es import CMAWorkers
    from measurement.interleaved import run_interleaved
    from craft.methods import get_method
    from craft.waits import WAITS, Waits

    warmup = warmup_for(engine, warmup)
    total = warmup + generations + 1  # the last generation also evaluates: it is not timed
    cfg = _craft_config(popsize, intrinsic_dim, len(task.classnames), total)
    box_cls = _timed_box_cls()
    backend = EngineBackend(engine, data, user_device)
    boxes = [box_cls(backend, popsize * total) for _ in range(runs)]
    method = get_method("craft")
    waits = Waits()
    token = WAITS.set(waits)
    try:
        with threadpool_limits(1, user_api="blas"), peak_memory(engine.device, resident_bytes=None) as mem, \
                (CMAWorkers() if cma_workers else nullcontext()) as workers:
            outcomes = run_interleaved([method.steps(box, task, cfg, seed=i) for i, box in enumerate(boxes)], workers)
    finally:
        WAITS.reset(token)
    for out in outcomes:
        if isinstance(out, BaseException):
            raise out
    rows = [r for box in boxes for r in _generations(box.calls, warmup, generations)]
    start, end = min(r["start"] for r in rows), max(r["end"] for r in rows)
    span = end - start
    return {
        "runs": runs, "interleaved": runs > 1, "cma_workers": cma_workers, "user_device": str(backend.output_device),
        "timed_generations_per_run": generations, "warmup_generations": warmup, **generation_figures(rows),
        "generations_per_s": len(rows) / span, "sequences_per_s": sum(r["sequences"] for r in rows) / span,
        "blocked_share": {kind: s / span for kind, s in waits.within(start, end).items()},
        "peak_mem_mib": mem.mb, "peak_mem_kind": mem.how,
    }


def amortised(loop: dict[str, Any]) -> dict[str, Any]:
    """A loop of N interleaved runs as one run's share: a generation = a round of N generations / N;
    each run's time inside its calls stays its own."""
    n = loop.get("runs", 1)
    sec = loop["seconds_per_generation"] / n
    return {**loop, "seconds_per_generation": sec,
            "runner_seconds_per_generation": sec - loop["query_seconds_per_generation"]}


def generation_figures(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median seconds per generation, inside black-box calls and the rest (the run's own work), and
    mean sequences per generation, of timed generations (:func:`_generations` rows)."""
    sec = statistics.median(r["seconds"] for r in rows)
    query = statistics.median(r["query_seconds"] for r in rows)
    return {
        "seconds_per_generation": sec, "query_seconds_per_generation": query, "runner_seconds_per_generation": sec - query,
        "sequences_per_generation": statistics.mean(r["sequences"] for r in rows),
    }


def measure_eval(engine, data, task, intrinsic_dim: int, user_device: torch.device | str = "cpu") -> float:
    """Seconds of one evaluation (val and test, refinement head included) of a prompt."""
    from craft.methods.base import evaluate
    from craft.refine import RefinementMLP

    from benchmark.model.engine import EngineBackend
    from craft.blackbox import MeteredBlackBox

    box = MeteredBlackBox(EngineBackend(engine, data, user_device), 0)
    ctx = box.embed_words("a photo of a")
    head = RefinementMLP(len(task.classnames), 512 if len(task.classnames) >= 1000 else 256).to(user_device)
    evaluate(box, task, ctx, head)
    t0 = time.perf_counter()
    evaluate(box, task, ctx, head)  # ends in a host sync (accuracy -> float)
    return time.perf_counter() - t0


def cma_seconds(dim: int, popsize: int, iterations: int = 48) -> float:
    """Mean seconds of one pycma ask + tell at ``dim``/``popsize`` with bounds (BLAS at 1 thread).

    As the methods drive pycma (``cma_eigen_gap`` of CraFT's defaults), and a mean, not a
    median: the eigendecomposition comes every few dozen generations and is most of the cost.
    """
    import numpy as np
    from threadpoolctl import threadpool_limits

    from craft.methods import CraFTConfig
    from craft.cma_es import cma_strategy

    cfg = CraFTConfig()
    with threadpool_limits(1, user_api="blas"):
        es = cma_strategy(dim, cfg.sigma, popsize, cfg.bound, 1, cfg.cma_eigen_gap)
        xs = es.ask()
        t0 = time.perf_counter()
        for _ in range(iterations):
            es.tell(xs, [float(np.sum(np.square(x))) for x in xs])
            xs = es.ask()
    return (time.perf_counter() - t0) / iterations


# ------------------------------------------------------------------------------- sweep estimate
def sweep_datasets() -> list[Shapes]:
    from benchmark.datasets.registry import list_datasets

    return [dataset_shapes(s.key) for s in list_datasets("coop11")]


def _gens(shapes: Shapes, popsize: int) -> int:
    from craft.budget import default_budget

    return default_budget(SHOTS, shapes.key.split("/")[-1]) // popsize


def sweep_rows_scaled(
    base: Shapes, loop: dict[str, Any], eval_s: float, cma_s: float, popsize: int, user_device: str = "cpu",
) -> list[dict[str, Any]]:
    """Per-dataset times scaled from the main dataset's loop (model stated in the JSON).

    A run's own work beside CMA-ES scales with its logits (classes x images) where it computes on
    the CPU. Where it computes on the GPU (``user_device``), it scales with the classes, as the queries:
    there its time is the wait for the generation's text-tower pass (sequences ∝ classes) and
    kernel launches (a few per mini-batch), while the logits' own arithmetic (ImageNet's 640
    million a generation: a few GB read and written) takes milliseconds. Scaled by classes x
    images, a EuroSAT loop on an H100 predicted 40.5 s an ImageNet generation
    (docs/measurements/h100_caltech101_user-both.json; a generation's query there is 1.8 s), and
    the measured estimate skipped ImageNet as too long to measure."""
    gpu = _on_gpu(user_device)
    rows = []
    for d in sweep_datasets():
        c, ci = d.classes / base.classes, (d.classes * d.train) / (base.classes * base.train)
        query = loop["query_seconds_per_generation"] * c
        runner = cma_s + max(0.0, loop["runner_seconds_per_generation"] - cma_s) * (c if gpu else ci)
        ev = eval_s * (d.classes * (d.val + d.test)) / (base.classes * (base.val + base.test))
        rows.append(sweep_row(d, popsize, query + runner, query, ev))
    return rows


def _on_gpu(user_device: str) -> bool:
    """Whether runs whose work is on ``user_device`` compute on a GPU (the sweep's scaling rule)."""
    return user_device.startswith("cuda")


def sweep_row(d: Shapes, popsize: int, gen_s: float, query_s: float, eval_s: float) -> dict[str, Any]:
    gens = _gens(d, popsize)
    evals = math.ceil(gens / EVAL_EVERY)
    return {
        "dataset": d.key, "classes": d.classes, "train_images": d.train, "generations": gens,
        "seconds_per_generation": gen_s, "query_seconds_per_generation": query_s, "eval_seconds": eval_s,
        "run_seconds": gens * gen_s + evals * eval_s, "query_run_seconds": gens * query_s + evals * eval_s,
        "sequences": gens * (popsize + 1) * d.classes,  # candidates' and refinement queries' text sequences
    }


def sweep_summary(
    rows: list[dict[str, Any]], mode: str, concurrency_speedup: float | None, user_device: str = "cpu",
    interleaved_runs: int = 1,
) -> dict[str, Any]:
    """Totals of the per-dataset rows, with the model of the estimate in words; ``user_device``:
    where the measured runs did their own work; ``interleaved_runs``: runs per measured loop (rows
    then hold one run's amortised share)."""
    serial = SEEDS * sum(r["run_seconds"] for r in rows)
    sequences = SEEDS * sum(r["sequences"] for r in rows)
    busy = SEEDS * sum(r["query_run_seconds"] for r in rows)
    together = (f" Each dataset's loop interleaved {interleaved_runs} runs in one thread, as a GPU model server "
                f"runs colocated runs (sweep keys colocate: true, runs_per_server: {interleaved_runs}); its seconds "
                f"per generation are a round of {interleaved_runs} generations / {interleaved_runs}, so serial_s is "
                f"the sweep run one dataset at a time with {interleaved_runs} of its runs interleaved."
                if interleaved_runs > 1 else " serial_s: the runs one at a time.")
    how = (" Per-dataset seconds measured by a short CraFT loop at each dataset's shapes "
           "(rows with measured=false: scaled from the largest dataset measured, as in scale mode, when its loop "
           "did not fit in --sweep-seconds)." + together
           if mode == "measure" else
           " Per-dataset seconds scaled from the main dataset's loop: query x C/C0; runner = CMA-ES + "
           + ("(runner0 - CMA-ES) x C/C0 (the runs' work on the GPU: waits for the pass and launches, "
              "not arithmetic on C*N logits)" if _on_gpu(user_device) else "(runner0 - CMA-ES) x (C*N)/(C0*N0)")
           + "; eval x C*(Nval+Ntest)/(C0*(Nval0+Ntest0)).")
    out = {
        "mode": mode,
        "model": (
            "serial_s = 3 seeds x sum over the 11 coop11 datasets of (generations x seconds per generation "
            "+ ceil(generations/10) x eval seconds); generations = 16-shot budget / popsize (8000/40 = 200, "
            "ImageNet 4000/40 = 100). query_bound_s counts only the time inside black-box calls (text tower, "
            "logits, transfer to the runner), evaluations included: the wall time if the runner-side work "
            "(CMA-ES, fitness, refinement epoch) of concurrent runs hid entirely behind it." + how
        ),
        "seeds": SEEDS, "shots": SHOTS, "serial_s": serial, "query_bound_s": busy, "sequences": sequences, "datasets": rows,
        "user_device": user_device, "interleaved_runs": interleaved_runs,
    }
    if concurrency_speedup:
        out["concurrency_speedup"] = concurrency_speedup
        out["concurrent_s"] = SEEDS * sum(max(r["query_run_seconds"], r["run_seconds"] / concurrency_speedup) for r in rows)
        out["concurrent_model"] = (
            "3 seeds x sum over datasets of max(query-bound seconds, serial seconds / speedup), where speedup = "
            "loop sequences/s with the most concurrent runs measured over that with one run, at the main "
            "dataset's shapes (optimistic where runner work is CPU-bound, as ImageNet's)"
        )
    return out
