"""The model server: cross-caller batching with unchanged numerics, task leases, and surviving server faults."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from benchmark.serve.batching import QueryBatcher
from craft.blackbox import VisualPrompt
from benchmark.errors import UserError
from benchmark.serve.client import RemoteBackend
from benchmark.serve.server import ModelServer
from benchmark.serve.options import ServerOptions
from benchmark.serve.pool import start_servers, stop_servers
from benchmark.datasets.task_spec import TaskSpec

SPEC = TaskSpec("digits_rotate", 2, 1)


def contexts(n: int, seed: int, width: int, n_ctx: int = 4) -> torch.Tensor:
    return torch.randn(n, n_ctx, width, generator=torch.Generator().manual_seed(seed)) * 0.02


@pytest.fixture
def one_thread():
    """As CPU model servers run (OMP_NUM_THREADS=1): with several threads, CPU kernels round the last
    bit differently for different batch sizes, merged or not (about 1e-7 here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def hold_first_pass(engine, name: str) -> list[int]:
    """Wrap ``engine.<name>`` (a pass) so that its first call holds 0.5 s, long enough for other
    callers to queue behind it; the returned list gets each call's batch size. ``del engine.<name>``
    puts the method back."""
    original, sizes = getattr(engine, name), []
    def held(x, *rest):
        sizes.append(x.shape[0])
        if len(sizes) == 1:
            time.sleep(0.5)
        return original(x, *rest)
    setattr(engine, name, held)
    return sizes


def test_concurrent_queries_merge_into_one_pass_with_identical_results(builtin_cache, one_thread) -> None:
    server = ModelServer("craft-tiny", "builtin", ServerOptions(batching=True))
    engine, batcher = server.engine, server._batcher
    assert isinstance(batcher, QueryBatcher)
    leases = [server.prepare(TaskSpec(ds, 2, seed)) for ds, seed in
              [("digits_rotate", 1), ("digits_rotate", 2), ("digits_shift", 1), ("digits_rotate", 3)]]
    # The digit sets share one class list; request 2 has a shorter context, so it cannot join.
    queries = [contexts(n, i, engine.width, n_ctx) for i, (n, n_ctx) in enumerate([(40, 4), (7, 4), (40, 3), (1, 4)])]
    alone = [server._backend(p["task_id"]).logits(q, "train")[0] for p, q in zip(leases, queries)]

    # Hold the first pass long enough for the other three callers to queue behind it.
    calls = hold_first_pass(engine, "text_features")
    results: dict[int, np.ndarray] = {}
    def call(i: int) -> None:
        results[i] = server.logits(leases[i]["task_id"], queries[i].numpy(), "train", None)[0]
    first = threading.Thread(target=call, args=(0,))
    first.start()
    time.sleep(0.1)
    rest = [threading.Thread(target=call, args=(i,)) for i in (1, 2, 3)]
    for t in rest:
        t.start()
    for t in (first, *rest):
        t.join()
    del engine.text_features
    # Pass 1: request 0; then requests 1 and 3 together (same class list and context length), and 2 alone.
    assert (batcher.passes, batcher.requests) == (3, 4) and calls[0] == 40 and sorted(calls[1:]) == [7 + 1, 40]
    # Each caller gets its own candidates' logits; a merged pass may round otherwise (the text tower's
    # matrix products block by the number of rows: the last bits differ on an AVX-512 CPU), never more.
    for i in range(4):
        torch.testing.assert_close(torch.from_numpy(results[i]), alone[i], rtol=1e-5, atol=1e-5,
                                   msg=lambda m, i=i: f"request {i} changed by batching: {m}")


def test_concurrent_image_side_queries_of_several_runs_merge_into_one_tower_pass(builtin_cache, one_thread) -> None:
    """Image-side queries (BPT-VLM's tokens) of runs on different tasks: their image-tower passes
    wait behind a running one and go through together; each run gets its own features, as alone."""
    server = ModelServer("craft-tiny", "builtin", ServerOptions(batching=True))
    engine, batcher = server.engine, server._batcher
    leases = [server.prepare(TaskSpec(ds, 2, 1)) for ds in ("digits_rotate", "digits_shift", "digits_noise")]
    width = engine.vision_width()
    tokens = [torch.randn(2, 3, width, generator=torch.Generator().manual_seed(i)).numpy() for i in range(3)]
    alone = [server._backend(p["task_id"]).image_logits(None, VisualPrompt(tokens=torch.from_numpy(t)), "train")[0]
             for p, t in zip(leases, tokens)]
    sizes, passes = hold_first_pass(engine, "prompted_pass"), batcher.passes
    results: dict[int, np.ndarray] = {}
    def call(i: int) -> None:
        results[i] = server.image_logits(leases[i]["task_id"], None, tokens[i], None, "train", None)[0]
    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    threads[0].start()
    time.sleep(0.1)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join()
    del engine.prompted_pass
    n = len(leases[0]["labels"]["train"])  # 20 images a task, 2 candidates each
    assert sizes == [2 * n, 2 * 2 * n] and batcher.passes - passes == 2
    for i in range(3):
        torch.testing.assert_close(torch.from_numpy(results[i]), alone[i], rtol=1e-5, atol=1e-5)
    busy = [server.release(p["task_id"])["gpu_s"] for p in leases]
    assert all(b > 0 for b in busy) and busy[1] < 0.45  # the second run's time is not the first's wait


def test_leases_share_a_task_and_the_last_release_drops_it(builtin_cache) -> None:
    server = ModelServer("craft-tiny", "builtin", ServerOptions(batching=False))
    a, b = server.prepare(SPEC), server.prepare(SPEC)
    assert a["task_id"] != b["task_id"] and b["images_encoded"] == 0 and server.ping()["tasks"] == 1
    q = contexts(3, 0, server.engine.width).numpy()
    server.logits(a["task_id"], q, "train", None)
    assert server.release(a["task_id"])["gpu_s"] > 0
    out, _ = server.logits(b["task_id"], q, "train", None)  # b still holds the task
    assert out.shape == (3, len(a["labels"]["train"]), 10)
    server.release(b["task_id"])
    assert server.ping()["tasks"] == 0


@pytest.mark.slow
def test_runs_survive_a_dead_server_and_a_restarted_one(builtin_cache) -> None:
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"CRAFT_BENCH_CACHE": str(builtin_cache), "OMP_NUM_THREADS": "1"}})
    try:
        actor = ray.remote(ModelServer).options(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=4)
        a, b = actor.remote("craft-tiny", "builtin"), actor.remote("craft-tiny", "builtin")
        backend = RemoteBackend([a, b], SPEC)
        q = contexts(5, 1, backend.info().width)
        before, _ = backend.logits(q, "train")

        ray.kill(a, no_restart=True)  # dead for good: the run moves to b and prepares its task there
        after, _ = backend.logits(q, "train")
        assert torch.equal(before, after) and backend.server is b and backend.failovers >= 1
        pid = ray.get(b.ping.remote())["pid"]

        ray.kill(b, no_restart=False)  # b restarts empty: the run prepares its task again (from disk cache)
        lease = backend.prepared["task_id"]
        # ray.kill is asynchronous: wait until the restarted process answers before querying.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if ray.get(b.ping.remote(), timeout=10)["pid"] != pid:
                    break
            except Exception:  # the actor is between its death and its restart
                pass
            time.sleep(0.2)
        again, _ = backend.logits(q, "train")
        assert torch.equal(before, again)
        assert backend.prepared["task_id"] != lease and ray.get(b.ping.remote())["pid"] != pid
        assert backend.release()["gpu_s"] > 0

        # On a GPU (declared), CBBT's runs get an fp32 server and the others a bf16 one, sharing it.
        tiny = [("craft-tiny", "builtin", m) for m in ("craft", "cbbt")]
        pool = start_servers(tiny, ServerOptions(runs_per_server=1, compile="reduce-overhead", attention="math"), gpus=1)
        pings = {k: ray.get(g[0].ping.remote()) for k, g in pool.groups.items()}
        assert {k: p["precision"] for k, p in pings.items()} == {
            ("craft-tiny", "builtin", "bf16"): "bf16", ("craft-tiny", "builtin", "fp32"): "fp32"}
        assert {p["compile"] for p in pings.values()} == {"reduce-overhead"}  # the sweep's compile key reaches them
        assert {p["attention"] for p in pings.values()} == {"math"}  # and its attention key
        assert pool.group(*tiny[1]) == pool.groups[("craft-tiny", "builtin", "fp32")]
        stop_servers(pool)

        # A server that cannot start is one sentence, not a restart loop.
        bad = ("RN50", "/nowhere/rn50.pt", "zero_shot_clip")
        with pytest.raises(UserError, match=r"^the model server for RN50:/nowhere/rn50.pt could not start: checkpoint file not found"):
            start_servers([bad], ServerOptions(runs_per_server=1))
    finally:
        ray.shutdown()


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the simulated GPU engine's autocast
def test_bf16_image_features_are_cached_apart_from_fp32_ones(builtin_cache) -> None:
    fp32 = ModelServer("craft-tiny", "builtin", ServerOptions(batching=False), "fp32")
    fp32.prepare(SPEC)
    assert fp32.ping()["precision"] == "fp32" and not fp32.ping()["bf16"]
    assert ModelServer("craft-tiny", "builtin", ServerOptions(batching=False)).prepare(SPEC)["images_encoded"] == 0  # CPU: fp32 too
    gpu_like = ModelServer("craft-tiny", "builtin", ServerOptions(batching=False))
    gpu_like.engine.bf16 = True  # as the engine on a GPU under precision auto or bf16
    again = gpu_like.prepare(SPEC)
    assert again["images_encoded"] > 0  # not served the fp32 features
    assert any('"precision": "bf16"' in p.read_text() for p in (builtin_cache / "features").rglob("*.json"))
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        ModelServer("craft-tiny", "builtin", ServerOptions(), "fp16")


def test_batching_is_a_sweep_key_that_reaches_the_server(builtin_cache) -> None:
    """``batching: false`` keeps a GPU server from merging (each run's rounding its own); ``true``
    merges on any device; null is the default (on a GPU only); anything else is refused by name."""
    from benchmark.sweep.config import config_from_dict

    base = {"out": "unused", "datasets": ["digits_rotate"], "methods": ["craft"], "shots": [2], "seeds": [1],
            "backbones": ["craft-tiny:builtin"]}
    assert config_from_dict(base).server.batching is None
    for value, merges in ((True, True), (False, False), (None, False)):  # on this CPU
        options = config_from_dict({**base, "batching": value}).server
        assert options.batching is value
        assert isinstance(ModelServer("craft-tiny", "builtin", options)._batcher, QueryBatcher) is merges
    with pytest.raises(UserError, match="batching must be true, false or null .*got 'off'"):
        config_from_dict({**base, "batching": "off"})
