"""CBBT: the zeroth-order estimate against autograd, exact query accounting, the adapter, determinism."""

from __future__ import annotations

import functools
import math
import statistics

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmark.model.engine import ClipEngine, EngineBackend, TaskData
from benchmark.model.loading import load_model
from craft.blackbox import MeteredBlackBox
from craft.methods import Task, get_method, make_config
from craft.methods.cbbt import schedule_queries
from craft.zeroth_order import combine, default_mu, directions, perturbed, queries_per_step
from tests.fakes import LinearBackend

NAMES = ["zero", "one", "two", "three"]
REPEATS = ((4, 24), (32, 12), (256, 5))  # (q, estimates averaged)


@pytest.fixture(scope="module")
def tiny_task():
    """A differentiable loss on the tiny text tower (random weights): the box's view and autograd's."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's workers: two threads on a busy 2-core machine crawl
    torch.manual_seed(0)
    engine = ClipEngine(load_model("craft-tiny", "random"))
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(16, engine.width, generator=g), dim=-1)
    y = torch.arange(16) % len(NAMES)
    backend = EngineBackend(engine, TaskData(NAMES, "{}", {"train": images}))
    box = MeteredBlackBox(backend, 10**7)

    def box_losses(prompts: torch.Tensor) -> torch.Tensor:
        logits = box.logits(prompts, "train")
        n = logits.shape[0]
        return F.cross_entropy(logits.reshape(-1, len(NAMES)), y.repeat(n), reduction="none").view(n, -1).mean(1)

    p = engine.embed_words("a")  # CBBT's initial prompt: one token
    leaf = p.clone().requires_grad_(True)
    text = engine.text_features_grad(leaf.unsqueeze(0), backend.part)[0]
    F.cross_entropy(engine.logit_scale * images @ text.T, y).backward()

    @functools.lru_cache(maxsize=None)
    def estimates(q: int, mu: float, seed: int):
        """One-sided and two-sided estimates from the same directions, and those directions."""
        dirs = directions(tuple(p.shape), q, torch.Generator().manual_seed(seed))
        losses = box_losses(perturbed(p, dirs, mu, two_sided=True))
        return combine(losses[: q + 1], dirs, mu, False), combine(losses, dirs, mu, True), dirs

    yield box, estimates, p, leaf.grad.detach()
    torch.set_num_threads(threads)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_estimate_aligns_with_the_autograd_gradient_as_q_grows_as_theory_predicts(tiny_task):
    box, estimates, p, true = tiny_task
    d = p.numel()
    mu = default_mu(d)
    means = {}
    for q, repeats in REPEATS:
        means[q] = statistics.mean(_cos(estimates(q, mu, s)[0], true) for s in range(repeats))
        # Random unit directions in d dimensions: E[cos] ~ sqrt(q / (q + d - 1)).
        assert means[q] == pytest.approx(math.sqrt(q / (q + d - 1)), abs=0.1), (q, means)
    assert means[4] < means[32] < means[256]
    assert means[256] > 0.8
    # An estimate (here one- and two-sided from one call) scores 1 + 2q prompts, all counted.
    before = box.usage.queries
    estimates(32, mu, 999)
    assert box.usage.queries - before == queries_per_step(32, True) == 65


def test_two_sided_difference_has_lower_error_than_one_sided_at_the_same_q(tiny_task):
    _, estimates, p, true = tiny_task
    mu = default_mu(p.numel())
    for q, _ in REPEATS:
        ratios = []
        for seed in range(5):  # the directions of the test above: no new queries
            one, two, dirs = estimates(q, mu, seed)
            # The estimate with exact directional derivatives along the same directions: what remains
            # of each estimate's error is its finite-difference error, O(mu) one-sided, O(mu^2) two-sided.
            exact = combine(torch.cat([torch.zeros(1), mu * (dirs.flatten(1) @ true.flatten())]), dirs, mu, False)
            err_one, err_two = float((one - exact).norm()), float((two - exact).norm())
            assert err_two < err_one, (q, seed, err_one, err_two)
            ratios.append(err_two / err_one)
        assert statistics.mean(ratios) < 0.5, (q, ratios)
    # With a step large enough for curvature to matter, the two-sided estimate is also closer in angle.
    q, big_mu = 32, 0.2
    pairs = [estimates(q, big_mu, s)[:2] for s in range(8)]
    assert statistics.mean(_cos(two, true) for _, two in pairs) > statistics.mean(_cos(one, true) for one, _ in pairs)


def test_output_features_give_the_same_logits_as_logits(tiny_task):
    box, _, p, _ = tiny_task
    ctx = torch.stack([p, p + 0.01])
    feats = box.features(ctx, "train", torch.tensor([1, 3, 5]))
    assert feats.text.shape == (2, len(NAMES), 64) and feats.image.shape == (3, 64)
    torch.testing.assert_close(
        feats.logit_scale * torch.einsum("ne,bce->bnc", feats.image, feats.text),
        box.logits(ctx, "train", torch.tensor([1, 3, 5])),
        rtol=1e-5, atol=1e-5,
    )


# ----------------------------------------------------------------------------- method on a fake box
class CountingBackend(LinearBackend):
    """Records which path each call took (``logits`` or ``features``)."""

    def __init__(self, per_split: int = 20) -> None:
        super().__init__(per_split=per_split)
        self.kinds: list[tuple[str, int, str, int]] = []

    def logits(self, contexts, split, indices=None):
        self.kinds.append(("logits", contexts.shape[0], split, len(indices) if indices is not None else -1))
        return super().logits(contexts, split, indices)

    def features(self, contexts, split, indices=None):
        self.kinds.append(("features", contexts.shape[0], split, len(indices) if indices is not None else -1))
        return super().features(contexts, split, indices)


def _run(hp: dict, *, box_budget: int = 10**6, per_split: int = 20, seed: int = 1):
    backend = CountingBackend(per_split)
    box = MeteredBlackBox(backend, box_budget)
    task = Task("fake", [f"c{i}" for i in range(5)], "{}", backend.labels, shots=4)
    cfg = make_config("cbbt", {"q": 4, "epochs": 4, "batch_size": 8, "eval_every": 2, **hp})
    return get_method("cbbt").run(box, task, cfg, seed), box, backend


def test_a_config_budget_below_one_step_is_refused() -> None:
    from craft.methods.cbbt import CBBTConfig

    with pytest.raises(ValueError, match=r"budget=0 .*budget null or >= one step's queries"):
        CBBTConfig(budget=0)
    with pytest.raises(ValueError, match=r"budget=8 "):
        CBBTConfig(q=4, two_sided=True, budget=8)
    assert CBBTConfig(q=4, two_sided=True, budget=9).budget == 9


@settings(max_examples=30, deadline=None)
@given(
    q=st.integers(1, 6),
    two_sided=st.booleans(),
    batch=st.integers(1, 12),
    per_split=st.integers(3, 25),
    epochs=st.integers(1, 5),
    adapter=st.sampled_from([0.0, 0.2]),
    adapter_start=st.integers(0, 3),
    eval_every=st.integers(1, 3),
    budget=st.integers(0, 250),
    cap_in_config=st.booleans(),
)
def test_query_accounting_is_exact(q, two_sided, batch, per_split, epochs, adapter, adapter_start, eval_every, budget, cap_in_config):
    hp = {"q": q, "two_sided": two_sided, "batch_size": batch, "epochs": epochs, "adapter_ratio": adapter,
          "adapter_start": adapter_start, "eval_every": eval_every}
    cost = 1 + (2 if two_sided else 1) * q
    if cap_in_config:
        budget = max(budget, cost)  # a config's budget below one step is refused (test below); the box's may be
        hp["budget"] = budget
    result, box, backend = _run(hp, box_budget=10**6 if cap_in_config else budget, per_split=per_split)
    steps_per_epoch = max(1, per_split // batch)
    steps = min(epochs * steps_per_epoch, budget // cost)
    train_calls = [k for k in backend.kinds if k[2] == "train"]
    # Every step is one budgeted call of exactly 1 + q (or 1 + 2q) prompts on one mini-batch.
    assert len(train_calls) == steps
    assert all(n == cost and 1 <= n_img <= batch for _, n, _, n_img in train_calls)
    assert box.usage.queries == result.usage["queries"] == steps * cost <= budget
    # The adapter's steps use output features, the others logits.
    adapted_steps = sum(1 for kind, *_ in train_calls if kind == "features")
    expected_adapted = 0 if adapter == 0 else max(0, steps - adapter_start * steps_per_epoch)
    assert adapted_steps == expected_adapted
    # Evaluations are unbudgeted, one prompt per eval set, and counted.
    evaluated = [r for r in result.trace if "top1_test" in r]
    n_evals = len(evaluated) if result.trace else 1
    assert box.usage.unbudgeted_queries == 2 * n_evals
    assert box.usage.text_sequences == (box.usage.queries + box.usage.unbudgeted_queries) * 5
    # One trace row per epoch with steps; queries as counted after it; the last row is evaluated.
    assert [r["generation"] for r in result.trace] == list(range(1, math.ceil(steps / steps_per_epoch) + 1))
    if result.trace:
        assert result.trace[-1]["queries"] == box.usage.queries and "top1_test" in result.trace[-1]
        assert result.metrics == {k: result.trace[-1][k] for k in ("top1_val", "top1_test")}
    assert set(result.metrics) == {"top1_val", "top1_test"}


def test_cell_budget_defaults_to_the_schedule_cost_and_a_config_budget_caps_it():
    from benchmark.sweep.cell import Cell

    cell = Cell("cbbt", "digits_noise", 16, 1, "craft-tiny", "builtin")
    cfg = make_config("cbbt")
    # 150 epochs x (160 images // 32) steps x (1 + 256) queries.
    assert cell.budget() == schedule_queries(cfg, 160, "digits_noise") == 150 * 5 * 257
    assert Cell("cbbt", "digits_noise", 16, 1, "craft-tiny", "builtin", {"two_sided": True}).budget() == 150 * 5 * 513
    assert Cell("cbbt", "digits_noise", 16, 1, "craft-tiny", "builtin", {"budget": 8000}).budget() == 8000
    assert schedule_queries(cfg, 16000, "imagenet") == 12 * 500 * 257
    assert Cell("coop", "digits_noise", 16, 1, "craft-tiny", "builtin").budget() == 0


def test_same_seed_same_run_other_seed_differs():
    a, _, _ = _run({"adapter_start": 2}, seed=3)
    b, _, _ = _run({"adapter_start": 2}, seed=3)
    c, _, _ = _run({"adapter_start": 2}, seed=4)
    assert a.trace == b.trace and a.metrics == b.metrics
    assert a.trace != c.trace


def test_learns_on_the_fake_task_and_the_adapter_counts_as_learned():
    zs = get_method("zero_shot_clip").run(
        MeteredBlackBox(LinearBackend(), 0), Task("fake", list("abcde"), "{}", LinearBackend().labels),
        make_config("zero_shot_clip"), 1,
    )
    result, _, _ = _run({"q": 16, "epochs": 12, "lr": 0.05, "adapter_start": 6})
    losses = [r["train_loss"] for r in result.trace]
    assert losses[5] < losses[0]  # the prompt alone, before the adapter starts
    assert result.metrics["top1_val"] > zs.metrics["top1_val"] + 20
    adapter = 2 * 5 * (5 // 4)  # 5-d features, reduction 4: 5 -> 1 -> 5, no biases
    assert result.learned_params == 8 + adapter  # one 8-d context token + the adapter
    prompt_only, _, _ = _run({"q": 16, "epochs": 12, "lr": 0.05, "adapter_ratio": 0})
    assert prompt_only.learned_params == 8


def test_a_step_that_would_pass_the_budget_ends_training():
    result, box, _ = _run({"q": 4, "epochs": 50}, box_budget=5 * 7 + 3)  # 7 steps of 5 queries fit
    assert box.usage.queries == 35 and box.remaining() == 3
    assert result.trace[-1]["queries"] == 35 and "top1_test" in result.trace[-1]


def test_bad_values_and_unknown_keys_name_what_is_expected():
    with pytest.raises(ValueError, match=r"invalid hyperparameter value\(s\): q=0, adapter_on='visual'"):
        _run({"q": 0, "adapter_on": "visual"})
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) n_dirs in method cbbt; CBBTConfig accepts: .*q"):
        make_config("cbbt", {"n_dirs": 8})


def test_select_best_test_reports_the_first_best_epoch_on_test_and_last_the_last():
    """The official code tests every epoch and keeps the first epoch of the highest test top-1
    (Dassl's best_val with split='test'); the default reports the last epoch."""
    hp = {"q": 4, "epochs": 12, "lr": 0.05, "eval_every": 5}
    last, _, _ = _run(hp)
    best, _, _ = _run({**hp, "select": "best_test"})
    assert last.trace[-1]["generation"] == 12 and last.metrics == {k: last.trace[-1][k] for k in ("top1_val", "top1_test")}
    assert [r["generation"] for r in last.trace if "top1_test" in r] == [5, 10, 12]
    assert all("top1_test" in r for r in best.trace)  # every epoch tested
    # The same run: its training never reads the evaluations.
    assert [r["train_loss"] for r in best.trace] == [r["train_loss"] for r in last.trace]
    tests = [r["top1_test"] for r in best.trace]
    first_best = best.trace[tests.index(max(tests))]
    assert best.metrics == {k: first_best[k] for k in ("top1_val", "top1_test")}
    assert best.hparams["select"] == "best_test" and last.hparams["select"] == "last"


def test_select_best_test_picks_the_best_when_the_last_is_worse():
    """On a run whose test accuracy falls after its peak the two selections differ."""
    for seed in range(1, 9):
        hp = {"q": 4, "epochs": 12, "lr": 0.3, "eval_every": 1}
        best, _, _ = _run({**hp, "select": "best_test"}, seed=seed)
        tests = [r["top1_test"] for r in best.trace]
        if max(tests) > tests[-1]:
            assert best.metrics["top1_test"] == max(tests) > best.trace[-1]["top1_test"]
            return
    pytest.fail("no seed's test accuracy fell after its peak: the test cannot tell the selections apart")


def test_select_best_test_needs_the_test_split_and_a_known_selection():
    backend = LinearBackend()
    task = Task("fake", list("abcde"), "{}", backend.labels, eval_splits=("val",))
    cfg = make_config("cbbt", {"q": 2, "epochs": 1, "select": "best_test"})
    with pytest.raises(ValueError, match="select='best_test' picks the epoch on the test set, and this run has none"):
        get_method("cbbt").run(MeteredBlackBox(backend, 10**4), task, cfg, 1)
    with pytest.raises(ValueError, match=r"select='best_val'.*select in \('last', 'best_test'\)"):
        make_config("cbbt", {"select": "best_val"})


def test_imagenet_epochs_follow_the_scripts_backbone_vit_b16_20_rn50_12():
    """main_adapter.sh: ImageNet 12 epochs on RN50, 20 on ViT-B/16; the other datasets the same on both."""
    from benchmark.sweep.cell import Cell
    from craft.methods.cbbt import epochs_for

    cfg = make_config("cbbt")
    for backbone, epochs in [("RN50", 12), ("ViT-B-16", 20), ("ViT-B-16-quickgelu", 20), ("ViT-B/16", 20),
                             ("RN101", 12), ("ViT-B-32", 12), ("", 12)]:
        assert epochs_for(cfg, "imagenet", backbone) == epochs, backbone
    assert [epochs_for(cfg, d, "ViT-B-16") for d in ("sun397", "stanford_cars", "dtd")] == [40, 80, 150]
    assert epochs_for(make_config("cbbt", {"epochs": 3}), "imagenet", "ViT-B-16") == 3
    # The cell's default budget is that schedule's cost: 16 x 1000 images, 500 steps of 257 queries.
    assert Cell("cbbt", "imagenet", 16, 1, "ViT-B-16", "openai").budget() == 20 * 500 * 257
    assert Cell("cbbt", "imagenet", 16, 1, "RN50", "openai").budget() == 12 * 500 * 257


def test_the_tasks_backbone_sets_the_epochs_a_run_trains_and_records():
    backend = LinearBackend()
    runs = {}
    for backbone in ("ViT-B-16", "RN50"):
        task = Task("imagenet", list("abcde"), "{}", backend.labels, backbone=backbone)
        cfg = make_config("cbbt", {"q": 1, "batch_size": 20, "adapter_ratio": 0})
        runs[backbone] = get_method("cbbt").run(MeteredBlackBox(backend, 10**6), task, cfg, 1)
    assert len(runs["ViT-B-16"].trace) == runs["ViT-B-16"].hparams["epochs"] == 20
    assert len(runs["RN50"].trace) == runs["RN50"].hparams["epochs"] == 12
