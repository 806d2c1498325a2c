"""The methods on a fake black box: budget use, traces, determinism, learning, config errors."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch

from craft.blackbox import MeteredBlackBox
from craft.methods import Task, get_method, make_config
from tests.fakes import LinearBackend

SMALL = {"popsize": 8, "intrinsic_dim": 16, "budget": 160, "eval_every": 5}


def _run(name: str, seed: int = 1, **hp):
    backend = LinearBackend()
    box = MeteredBlackBox(backend, 1000)
    task = Task("fake", [f"c{i}" for i in range(5)], "a photo of a {}.", backend.labels, shots=4)
    cfg = make_config(name, {**SMALL, **hp} if name != "zero_shot_clip" else {})
    return get_method(name).run(box, task, cfg, seed), box


@pytest.mark.parametrize("name", ["bbt", "craft"])
def test_search_uses_exactly_its_budget_and_traces_each_generation(name):
    result, box = _run(name)
    assert box.usage.queries == 160 == result.usage["queries"]
    assert len(result.trace) == 160 // 8
    assert [r["queries"] for r in result.trace] == list(range(8, 161, 8))
    evaluated = [r for r in result.trace if "top1_test" in r]
    assert [r["generation"] for r in evaluated] == [5, 10, 15, 20]
    assert result.metrics["top1_test"] == evaluated[-1]["top1_test"]
    if name == "craft":
        assert all("train_loss" in r for r in result.trace)
        # one unbudgeted query per generation for the refinement epoch, plus 2 per evaluation
        assert box.usage.unbudgeted_queries == 20 + 2 * 4


@pytest.mark.parametrize("name", ["bbt", "craft"])
def test_same_seed_same_result_different_seed_differs(name):
    a, _ = _run(name, seed=3)
    b, _ = _run(name, seed=3)
    c, _ = _run(name, seed=4)
    assert a.trace == b.trace and a.metrics == b.metrics
    assert a.trace != c.trace


def test_craft_refinement_learns_on_the_fake_task():
    zs, _ = _run("zero_shot_clip")
    craft, _ = _run("craft", budget=400, weight=0.1, lr=0.01)
    assert craft.trace[-1]["train_loss"] < craft.trace[0]["train_loss"]
    assert craft.metrics["top1_val"] > zs.metrics["top1_val"]


def test_budget_larger_than_box_is_clipped_to_what_is_left():
    backend = LinearBackend()
    box = MeteredBlackBox(backend, 100)
    task = Task("fake", list("abcde"), "{}", backend.labels)
    get_method("bbt").run(box, task, make_config("bbt", {**SMALL, "budget": 1000}), 1)
    assert box.usage.queries == 96  # 12 whole generations of 8


def test_unknown_method_and_hyperparameter_errors_name_the_valid_ones():
    with pytest.raises(ValueError, match="unknown method 'crafty'; known methods: bbt, blackvip, bpt_vlm, cbbt, coop, craft, lfa, zero_shot_clip"):
        get_method("crafty")
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) sigmaa in method craft; CraFTConfig accepts: .*sigma"):
        make_config("craft", {"sigmaa": 1})
    with pytest.raises(ValueError, match="invalid hyperparameter value.*sigma=-1"):
        _run("craft", sigma=-1)


def test_cma_eigen_gap_scales_pycmas_decomposition_interval(monkeypatch):
    import cma.sampler

    calls = {"n": 0}
    decompose = cma.sampler.GaussFullSampler._decompose_C

    def counted(self):
        calls["n"] += 1
        decompose(self)

    monkeypatch.setattr(cma.sampler.GaussFullSampler, "_decompose_C", counted)
    counts = {}
    for gap in (1.0, 10.0):
        calls["n"] = 0
        _run("bbt", intrinsic_dim=256, popsize=40, budget=40 * 25, cma_eigen_gap=gap)
        counts[gap] = calls["n"]
    # pycma's own interval at N=256, popsize 40 is 1.2 generations: every other one at gap 1,
    # every 13th at gap 10 (25 generations).
    assert 11 <= counts[1.0] <= 13 and 1 <= counts[10.0] <= 2
    with pytest.raises(ValueError, match="cma_eigen_gap=0"):
        _run("bbt", cma_eigen_gap=0)


class _WatchedBackend(LinearBackend):
    """Keeps a weak reference to every candidates' logits it hands out (the refinement query has one row)."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list = []

    def logits(self, contexts, split, indices=None):
        out, n = super().logits(contexts, split, indices)
        if contexts.shape[0] > 1:
            self.handed.append(weakref.ref(out))
        return out, n


class _WatchedManyBackend(_WatchedBackend):
    def logits_many(self, contexts, split):  # as the engine on a GPU: several queries in one call
        splits = [split] * len(contexts) if isinstance(split, str) else split
        return [self.logits(c, s)[0] for c, s in zip(contexts, splits)], 0


@pytest.mark.parametrize("backend_cls", [_WatchedBackend, _WatchedManyBackend])
@pytest.mark.parametrize("method", ["craft", "bbt"])
def test_a_run_holds_no_candidates_logits_while_it_waits(method, backend_cls):
    """At ImageNet's shapes a generation's logits are 2.6 GB: interleaved runs must not each hold theirs
    while the others take their turn (their fitness is queued by then)."""
    backend = backend_cls()
    box = MeteredBlackBox(backend, 10 * 8)
    task = Task("fake", [f"c{i}" for i in range(5)], "a photo of a {}.", backend.labels, shots=4)
    steps = get_method(method).steps(box, task, make_config(method, {"popsize": 10, "intrinsic_dim": 6, "eval_every": 3}), 0)
    alive = []
    for _ in steps:
        gc.collect()
        alive.append(sum(r() is not None for r in backend.handed))
    assert len(backend.handed) == 8 and len(alive) >= 8 and set(alive) == {0}


def test_restrict_keeps_the_subsets_classes_and_reads_negative_indices_as_a_list_does():
    from craft.methods.base import restrict_logits

    logits = torch.arange(12.0).view(2, 6)
    out = restrict_logits(logits, [1, -1])
    assert torch.equal(out[:, [1, 5]], logits[:, [1, 5]]) and torch.isinf(out[:, [0, 2, 3, 4]]).all()


def test_restrict_logits_matches_crafts_label_mapping():
    """ImageNet-A/R scored in ImageNet's label space: the same argmax as the official code's label mapping."""
    from craft.methods.base import restrict_logits

    torch.manual_seed(0)
    logits, subset = torch.randn(64, 10), [1, 4, 5, 9]
    mapping = torch.zeros(10, len(subset))  # CraFT: logits @ label_mapping, labels in subset order
    mapping[subset, range(len(subset))] = 1
    theirs = torch.tensor(subset)[(logits @ mapping).argmax(1)]
    assert torch.equal(restrict_logits(logits, subset).argmax(1), theirs)
