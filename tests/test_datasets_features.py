"""The feature cache: stable keys, hits without recompute, safetensors on disk, safe concurrent fills."""

from __future__ import annotations

import json
import multiprocessing
import time
from pathlib import Path

import torch
from safetensors import safe_open

from benchmark.model.feature_cache import FeatureCache, default_cache_root

FIELDS = {"backbone": "RN50", "weights": "openai", "dataset": "dtd", "split": "train", "seed": 1,
          "shots": 16, "aug_pass": 0, "images": 752}


def features() -> torch.Tensor:
    return torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7


def test_key_is_stable_and_depends_on_every_field():
    key = FeatureCache.key(**FIELDS)
    assert key == FeatureCache.key(**dict(reversed(FIELDS.items()))) and len(key) == 64
    assert len({FeatureCache.key(**{**FIELDS, name: "other"}) for name in FIELDS} | {key}) == len(FIELDS) + 1


def test_hit_returns_the_same_tensor_without_computing(tmp_path):
    cache, calls = FeatureCache(tmp_path), []
    first = cache.get_or_compute(FIELDS, lambda: calls.append(1) or features())
    again = cache.get_or_compute(FIELDS, lambda: calls.append(1) or features())
    assert calls == [1] and torch.equal(first, features()) and torch.equal(again, features())
    assert again.dtype == torch.float32 and cache.get({**FIELDS, "seed": 2}) is None


def test_a_hit_is_aligned_as_a_fresh_tensor_and_answers_the_same_to_the_bit(tmp_path):
    """The file's tensor starts after its header; read as it lies, a one-candidate einsum on it
    rounds otherwise than on the freshly computed tensor (what made a rerun of a CraFT cell, its
    views now cached, end 3.5 points away). A hit is copied onto torch's 64-byte boundary."""
    cache = FeatureCache(tmp_path)
    fresh = torch.randn(160, 64, generator=torch.Generator().manual_seed(0))
    cache.get_or_compute(FIELDS, lambda: fresh)
    hit = cache.get(FIELDS)
    assert hit.data_ptr() % 64 == 0 and torch.equal(hit, fresh)
    text = torch.randn(1, 10, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.einsum("ne,bce->bnc", hit, text), torch.einsum("ne,bce->bnc", fresh, text))


def test_entry_is_safetensors_with_a_json_sidecar(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.get_or_compute(FIELDS, features)
    path = cache.path(FIELDS)
    raw = path.read_bytes()
    assert not raw.startswith((b"\x80", b"PK"))  # neither a pickle nor torch.save's zip
    header_len = int.from_bytes(raw[:8], "little")
    assert set(json.loads(raw[8 : 8 + header_len])) == {"features", "__metadata__"}
    with safe_open(path, "pt") as f:
        assert torch.equal(f.get_tensor("features"), features())
    assert json.loads(path.with_suffix(".json").read_text()) == FIELDS


def test_unreadable_entry_is_recomputed(tmp_path):
    cache = FeatureCache(tmp_path)
    tmp_path.mkdir(exist_ok=True)
    cache.path(FIELDS).write_bytes(b"garbage")
    assert torch.equal(cache.get_or_compute(FIELDS, features), features())
    assert cache.get(FIELDS) is not None


def test_entry_with_other_than_its_recorded_rows_is_recomputed(tmp_path):
    cache, fields = FeatureCache(tmp_path), {**FIELDS, "n": 3}
    cache.get_or_compute(fields, features)
    cache.path(fields).rename(cache.path({**fields, "n": 4}))  # an entry that claims 4 images, holds 3
    assert cache.get({**fields, "n": 4}) is None
    assert cache.get_or_compute({**fields, "n": 4}, lambda: torch.zeros(4, 4)).shape == (4, 4)
    assert cache.get({**fields, "n": 4}).shape == (4, 4)


def _fill(root: str, barrier, results) -> None:
    def slow() -> torch.Tensor:
        time.sleep(0.2)
        return features()

    barrier.wait()
    results.put(FeatureCache(Path(root)).get_or_compute(FIELDS, slow).tolist())


def test_two_processes_filling_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")  # fast start; the children run no parallel torch op
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(str(tmp_path), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0] == got[1] == features().tolist()
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".safetensors"]  # no temp files left
    assert torch.equal(FeatureCache(tmp_path).get(FIELDS), features())


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path / "features"
    monkeypatch.delenv("CRAFT_BENCH_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "craft-bench" / "features"


def test_cache_keys_follow_the_shipped_models_bytes_and_random_weights_are_never_cached(tmp_path, monkeypatch):
    """A release that retrains the built-in model must not reuse features of the old one."""
    import shutil

    import benchmark.model.builtin as suite
    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.model.engine import ClipEngine
    from benchmark.model.loading import load_model
    from benchmark.model.task import prepare_task, weights_id
    from benchmark.datasets.task_spec import TaskSpec

    config, weights = suite.builtin_model_paths()
    copy = tmp_path / weights.name
    shutil.copy(weights, copy)
    monkeypatch.setattr(suite, "builtin_model_paths", lambda: (config, copy))
    engine = ClipEngine(load_model("craft-tiny", "builtin"))
    before = weights_id(engine)
    with open(copy, "r+b") as f:  # one byte of the shipped weights changes
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    after = weights_id(engine)
    assert before.startswith("builtin:") and after.startswith("builtin:") and before != after

    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    random = ClipEngine(load_model("craft-tiny", "random"))
    assert weights_id(random) is None
    feats = tmp_path / "feats"
    prepared = prepare_task(random, TaskSpec("digits_rotate", 1, 1, eval_test=False), FeatureCache(feats))
    assert prepared.images_encoded > 0
    assert not feats.exists() or not any(feats.iterdir())


def test_a_craft_cell_rerun_on_its_cached_features_gives_the_same_trace(builtin_cache, tmp_path):
    """A CraFT run under the official protocol (fresh views: the refinement module's one-prompt
    query on them) run again on the features and views its first run cached: the same fitness and
    losses, generation by generation, to the bit."""
    from benchmark.serve.server import ModelServer
    from benchmark.sweep.cell import Cell
    from benchmark.sweep.protocol import OFFICIAL, protocol_hparams
    from benchmark.sweep.run_cell import run_cell

    hparams = {**protocol_hparams(OFFICIAL, "craft"), "budget": 240, "intrinsic_dim": 64}
    cell = Cell("craft", "digits_noise", 2, 2, "craft-tiny", "builtin", hparams, protocol=OFFICIAL)
    traces = []
    for _ in range(2):
        server = ModelServer("craft-tiny", "builtin", cache_dir=str(tmp_path / "features"))
        rows = run_cell(cell, server)
        assert rows[0]["status"] == "ok", rows[0]["error"]
        trace = json.loads(rows[0]["trace"]) if isinstance(rows[0]["trace"], str) else rows[0]["trace"]
        traces.append(([(r["generation"], r["fitness"], r.get("train_loss")) for r in trace], rows[0]["images_encoded"]))
    (first, encoded), (again, reread) = traces
    assert encoded > 0 and reread == 0  # the second run read every feature and view from the cache
    assert len(first) == 6 and first == again
