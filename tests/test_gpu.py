"""The engine and the methods on a CUDA GPU. Skipped without one (CI has none); run on a GPU
machine by ``measurement/device_perf.sh`` (``python -m pytest tests/test_gpu.py``)."""

from __future__ import annotations

import pytest
import torch

from benchmark.model.engine import ClipEngine, EngineBackend
from benchmark.model.loading import load_model
from measurement.loops import Shapes, synthetic_task
from craft.blackbox import MeteredBlackBox
from craft.methods import get_method, make_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (measurement/device_perf.sh runs it)")

NAMES = [f"class {i}" for i in range(10)]
SHAPES = Shapes("gpu-test", classes=10, train=160, val=40, test=100)


@pytest.fixture(scope="module")
def tiny():
    return load_model("craft-tiny", "builtin", "cuda")


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("bf16", 3e-2)])
def test_fast_path_matches_the_official_path(tiny, precision, tolerance):
    from measurement.official_path import OfficialEngine

    fast = ClipEngine(tiny, torch.device("cuda"), precision=precision)
    official = OfficialEngine(tiny, torch.device("cuda"))
    p0 = fast.embed_words("a photo of a")
    ctx = p0 + 0.2 * torch.randn(6, *p0.shape, generator=torch.Generator().manual_seed(0))
    a = fast.text_features(ctx, fast.class_part(NAMES))
    b = official.text_features(ctx, official.class_part(NAMES))
    assert fast.bf16 == (precision == "bf16")
    assert _rel(a, b) < tolerance


@pytest.mark.parametrize("mode, max_sequences", [("default", 24), ("reduce-overhead", 24), ("reduce-overhead", 4)])
def test_the_compiled_path_is_one_graph_for_every_chunk_and_class_list(tiny, mode, max_sequences):
    """As tests/test_engine.py's CPU test, on CUDA in bf16 (what craft perf --compile measures).
    reduce-overhead replays CUDA graphs, whose outputs the next call overwrites: with 4 sequences
    a pass, a candidate's classes take 5 calls before their features are joined."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = ClipEngine(tiny, torch.device("cuda"), compile=mode, max_sequences=max_sequences)
    eager = ClipEngine(tiny, torch.device("cuda"), max_sequences=max_sequences)
    p0 = compiled.embed_words("a photo of a")
    ctx = p0 + 0.2 * torch.randn(9, *p0.shape, generator=torch.Generator().manual_seed(0))
    # A CUDA graph skipped (and why) is an error here, not a warning.
    strict = {"triton.cudagraph_or_error": True} if hasattr(torch._inductor.config.triton, "cudagraph_or_error") else {}
    with torch._inductor.config.patch(strict):
        for names in (NAMES, NAMES[:3], [f"a much longer class name number {i}" for i in range(5)]):
            for n in (9, 1, 2, 9):  # 9 again: a CUDA graph is recorded at a size's second call, replayed after
                got = compiled.text_features(ctx[:n], compiled.class_part(names))
                assert _rel(got, eager.text_features(ctx[:n], eager.class_part(names))) < 3e-2
    assert counters["stats"]["unique_graphs"] == 1
    if mode == "reduce-overhead":
        assert not counters["inductor"]["cudagraph_skips"]


def test_the_refinement_module_trains_with_fused_adam_on_the_gpu():
    from craft.refine import RefinementMLP, refinement_optimizer

    mlp = RefinementMLP(10, 16).cuda()
    opt = refinement_optimizer(mlp, 0.01)
    assert opt.defaults["fused"] is True
    mlp(torch.randn(4, 10, device="cuda")).sum().backward()
    opt.step()  # fused Adam accepts the module's parameters


def _run(method: str, engine: ClipEngine, user: str, cfg_values: dict, budget: int = 10_000):
    data, task = synthetic_task(engine, SHAPES, NAMES, seed=0)
    cfg = make_config(method, cfg_values)
    box = MeteredBlackBox(EngineBackend(engine, data, user), budget)
    return get_method(method).run(box, task, cfg, seed=0), box


def test_craft_computes_on_the_gpu_when_its_logits_stay_there(tiny):
    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    values = {"popsize": 8, "intrinsic_dim": 16, "budget": 8 * 4, "eval_every": 2}
    on_gpu, box = _run("craft", engine, "cuda", values)
    on_cpu, _ = _run("craft", engine, "cpu", values)
    assert box.info.device == "cuda"
    assert box.logits(engine.embed_words("a photo of a"), budgeted=False).device.type == "cuda"
    assert on_gpu.usage == on_cpu.usage
    # The same queries, fitness and refinement in another place: the same trajectory up to rounding.
    for g, c in zip(on_gpu.trace, on_cpu.trace, strict=True):
        assert g["fitness"] == pytest.approx(c["fitness"], rel=1e-4)
        assert g["train_loss"] == pytest.approx(c["train_loss"], rel=1e-3)
    assert on_gpu.metrics["top1_test"] == pytest.approx(on_cpu.metrics["top1_test"], abs=2.0)


def test_cbbt_and_zero_shot_run_with_outputs_on_the_gpu(tiny):
    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    cbbt, box = _run("cbbt", engine, "cuda", {"q": 4, "batch_size": 32, "budget": 40, "adapter_start": 0})
    assert 0 < box.usage.queries <= 40 and set(cbbt.metrics) == {"top1_val", "top1_test"}
    zs, _ = _run("zero_shot_clip", engine, "cuda", {})
    assert 0.0 <= zs.metrics["top1_test"] <= 100.0


def test_a_colocated_craft_cell_runs_on_the_gpu_server_like_one_in_its_own_task():
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.server import ModelServer
    from benchmark.sweep.cell import Cell
    from benchmark.sweep.run_cell import run_cell

    server = ModelServer("craft-tiny", "builtin", ServerOptions(), "fp32", cache_dir="", device="cuda")
    cell = Cell("craft", "digits_rotate", 4, 1, "craft-tiny", "builtin",
                {"popsize": 6, "intrinsic_dim": 8, "budget": 30, "eval_every": 2})
    [alone] = run_cell(cell, server)
    served = server._served
    [beside] = run_cell(cell, server, colocate=True)
    assert server._served == served  # no query crossed the server's interface: it ran beside the engine
    assert beside["queries"] == alone["queries"] == 30
    assert beside["peak_mem_mb"] > 0  # the GPU's peak during the run
    # Fitness on the GPU rounds differently from the CPU's: the same run up to a few test images.
    assert beside["top1_test"] == pytest.approx(alone["top1_test"], abs=3.0)


def _steps(engine: ClipEngine, seed: int, values: dict, class_subsets: dict | None = None):
    data, task = synthetic_task(engine, SHAPES, NAMES, seed=0)
    task.class_subsets = class_subsets or {}
    box = MeteredBlackBox(EngineBackend(engine, data, engine.device), 10_000)
    return get_method("craft").steps(box, task, make_config("craft", values), seed)


def test_a_craft_generation_queues_its_work_without_waiting_for_the_gpu(tiny):
    """After its set-up, a run on the GPU waits only for its own copies (craft.transfer): no
    synchronising call (a pageable copy, .item(), .tolist() of a GPU tensor) between its yields."""
    import time

    from craft.methods.base import drive
    from craft.waits import WAITS, Waits

    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    # Its test images scored in a label subspace, as ImageNet-A/R's are.
    steps = _steps(engine, 0, {"popsize": 8, "intrinsic_dim": 16, "budget": 8 * 5, "eval_every": 2},
                   class_subsets={"test": list(range(0, 10, 2))})
    next(steps)  # set-up (model calls, the module's weights to the GPU) and the first generation queued
    waits = Waits()
    token = WAITS.set(waits)
    torch.cuda.set_sync_debug_mode("error")
    try:
        result = drive(steps)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        WAITS.reset(token)
    assert result.usage["queries"] == 40 and len(result.trace) == 5
    assert set(waits.within(0.0, time.perf_counter())) == {"device"}  # its waits: for its own results


def test_logits_copied_to_the_host_are_a_recorded_wait_for_the_gpu(tiny):
    import time

    from craft.waits import WAITS, Waits

    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    data, _ = synthetic_task(engine, SHAPES, NAMES, seed=0)
    p0 = engine.embed_words("a photo of a")
    waits = Waits()
    token = WAITS.set(waits)
    try:
        on_host, _ = EngineBackend(engine, data, "cpu").logits(p0.unsqueeze(0), "train")
        on_gpu, _ = EngineBackend(engine, data, "cuda").logits(p0.unsqueeze(0), "train")
    finally:
        WAITS.reset(token)
    assert on_host.device.type == "cpu" and on_gpu.device.type == "cuda"
    assert len(waits.spans) == 1 and set(waits.within(0.0, time.perf_counter())) == {"device"}


def test_interleaved_runs_on_the_gpu_give_the_results_of_each_alone(tiny):
    from measurement.interleaved import run_interleaved
    from craft.methods.base import drive

    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    values = {"popsize": 8, "intrinsic_dim": 16, "budget": 8 * 4, "eval_every": 2}
    from craft.cma_es import CMAWorkers

    alone = [drive(_steps(engine, s, values)) for s in (1, 2, 3)]
    with CMAWorkers() as workers:
        for pool in (None, workers):  # CMA-ES in the loop's thread, then in worker processes
            together = run_interleaved([_steps(engine, s, values) for s in (1, 2, 3)], pool)
            for a, t in zip(alone, together, strict=True):
                assert t.usage == a.usage
                for x, y in zip(t.trace, a.trace, strict=True):
                    assert x["fitness"] == pytest.approx(y["fitness"], rel=1e-5)
                    assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)


def test_interleaved_runs_on_cuda_graphs_give_the_results_of_each_alone(tiny):
    """compile="reduce-overhead": each call's features are copied out of the graphs' memory before
    the next run's pass overwrites it (benchmark.model.engine._one_graph)."""
    from measurement.interleaved import run_interleaved
    from craft.methods.base import drive

    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32", compile="reduce-overhead")
    values = {"popsize": 8, "intrinsic_dim": 16, "budget": 8 * 4, "eval_every": 2}
    alone = [drive(_steps(engine, s, values)) for s in (1, 2)]
    together = run_interleaved([_steps(engine, s, values) for s in (1, 2)])
    for a, t in zip(alone, together, strict=True):
        assert t.usage == a.usage
        for x, y in zip(t.trace, a.trace, strict=True):
            assert x["fitness"] == pytest.approx(y["fitness"], rel=1e-5)


def test_the_profile_gives_a_generations_device_time_and_its_bound(tiny):
    from measurement import profile
    from measurement.loops import synthetic_task as task_of

    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    data, task = task_of(engine, SHAPES, NAMES, seed=0)
    p0 = engine.embed_words("a photo of a")
    ps = profile.profile_pass(engine, NAMES, p0.expand(8, -1, -1).clone())
    assert 0 < ps["device_busy_s"] and ps["device_ops"] > 0 and ps["device_top"][0]["calls"] > 0
    gen = profile.profile_generations(engine, data, task, 8, 16, engine.device)
    assert 0 < gen["device_busy_s"] < gen["wall_s"]
    assert gen["gpu_bound_sequences_per_s"] == pytest.approx(9 * 10 / gen["device_busy_s"])


def test_on_a_gpu_a_generations_two_queries_go_in_one_pass(tiny):
    engine = ClipEngine(tiny, torch.device("cuda"), precision="fp32")
    data, _ = synthetic_task(engine, SHAPES, NAMES, seed=0)
    backend = EngineBackend(engine, data, engine.device)
    assert backend.merge_queries  # the default on a GPU (on a CPU: one pass each, tests/test_engine.py)
    p0 = engine.embed_words("a photo of a")
    ctx = p0 + 0.2 * torch.randn(9, *p0.shape, generator=torch.Generator().manual_seed(0))
    passes = []
    text_features = engine.text_features
    engine.text_features = lambda c, part: passes.append(c.shape[0]) or text_features(c, part)
    merged, _ = backend.logits_many([ctx[:1], ctx[1:]], "train")
    engine.text_features = text_features
    assert passes == [9]
    for got, c in zip(merged, (ctx[:1], ctx[1:])):
        assert _rel(got, backend.logits(c, "train")[0]) < 1e-5
