"""The official CraFT loop, written again here from mrflogs/CraFT's ``main_craft.py`` and independent
of ``craft/methods``, against the project's CraFT and BBT on the built-in model (CPU, fp32).

The official order per generation: ask the population, score it, tell; ask again and set the
prompt in use to the mean of ``A z`` over that fresh population; train the refinement MLP one epoch
on freshly augmented training images whose features are not normalised (the KL term while
``steps <= budget // n``); next generation's ask. Both sides draw the same random numbers in the
same order (the projection and the mini-batch order from a generator seeded by the run's seed, the
MLP's init from torch's global state seeded by it, pycma seeded by it), so the candidates, the
fitness values and the final prompt must agree.
"""

from __future__ import annotations

import cma
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from craft.blackbox import MeteredBlackBox, view_split
from craft.methods import get_method, make_config
from craft.methods.base import Task

SEED = 1
GENERATIONS = 10
SETTINGS = dict(sigma=0.5, bound=5.0, std=0.2, popsize=40, intrinsic_dim=64, budget=400, eval_every=100, cma_eigen_gap=1.0)
CRAFT_SETTINGS = dict(weight=0.1, n=4, lr=1e-3, batch_size=64, hidden=32)


class Recording:
    """A backend that records every query's contexts and image set, then answers as ``inner``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.queries: list[tuple[torch.Tensor, str]] = []

    def info(self):
        return self.inner.info()

    def embed_words(self, text):
        return self.inner.embed_words(text)

    def logits(self, contexts, split, indices=None):
        self.queries.append((contexts.clone(), split))
        return self.inner.logits(contexts, split, indices)

    def template_logits(self, template, split):
        return self.inner.template_logits(template, split)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, one_torch_thread):
    """The built-in model and Digits-Rotate, 16 shots, with an augmentation that varies (random
    crops), so that each generation's view of the training images is another one."""
    import benchmark.model.task as task_module
    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.model.engine import ClipEngine, EngineBackend
    from benchmark.model.loading import load_model
    from benchmark.datasets.task_spec import TaskSpec

    mp = pytest.MonkeyPatch()
    cache = tmp_path_factory.mktemp("cache")
    mp.setenv("CRAFT_BENCH_CACHE", str(cache))
    ensure_builtin_suite(cache / "builtin")
    engine = ClipEngine(load_model("craft-tiny", "builtin"))
    # random crops in place of the digits' own augmentation (none), as a protocol puts its own
    prep = task_module.prepare_task(engine, TaskSpec("digits_rotate", 16, SEED, eval_test=False, train_aug="rrc"), None)
    mp.undo()
    task = Task("digits_rotate", prep.classnames, prep.template, prep.labels, 16, ("val",))
    return (lambda: Recording(EngineBackend(engine, prep))), task


def official_loop(backend: Recording, task: Task, refine: bool) -> dict:
    """main_craft.py's ``run``, on the black box: returns each generation's candidates and fitness
    values, the refinement queries and the final prompt."""
    cfg = {**SETTINGS, **(CRAFT_SETTINGS if refine else {})}
    box = MeteredBlackBox(backend, cfg["budget"])
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    p0 = box.embed_words("a photo of a").float()
    n_ctx, width = p0.shape
    A = torch.randn(n_ctx * width, cfg["intrinsic_dim"], generator=gen) * cfg["std"]  # Linear.weight, normal_(0, std)
    y = task.labels["train"]
    n_cls = len(task.classnames)
    if refine:
        net = nn.Sequential(nn.Linear(n_cls, cfg["hidden"]), nn.ReLU(), nn.Linear(cfg["hidden"], n_cls))
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
    es = cma.CMAEvolutionStrategy(cfg["intrinsic_dim"] * [0], cfg["sigma"], inopts={
        "seed": SEED, "popsize": cfg["popsize"], "maxiter": cfg["budget"] // cfg["popsize"], "verbose": -9,
        "bounds": [-cfg["bound"], cfg["bound"]], "AdaptSigma": cma.sigma_adaptation.CMAAdaptSigmaCSA,
    })

    def context(z: torch.Tensor) -> torch.Tensor:
        return p0 + (z @ A.T).reshape(-1, n_ctx, width)

    bias = torch.zeros(n_ctx, width)
    steps, out = 0, {"candidates": [], "fitness": []}
    for g in range(1, GENERATIONS + 1):
        solutions = es.ask()
        z = torch.tensor(np.array(solutions)).float()
        fitnesses = []
        with torch.no_grad():
            for logits in box.logits(context(z)):
                loss = F.cross_entropy(logits, y)
                if refine:
                    update = logits + net(logits)
                    loss += cfg["weight"] * F.kl_div(F.log_softmax(logits, 1), F.softmax(update, 1), reduction="batchmean")
                fitnesses.append(loss.item())
        es.tell(solutions, fitnesses)
        out["candidates"].append(context(z))
        out["fitness"].append(fitnesses)
        # update_context_prompt: a fresh ask; the prompt in use is the mean of its projections
        fresh = torch.tensor(np.array(es.ask())).float()
        bias = (fresh @ A.T).reshape(-1, n_ctx, width).mean(0)
        steps += cfg["popsize"]
        if refine:  # one epoch over freshly augmented images, features not normalised
            with torch.no_grad():
                logits = box.logits(p0 + bias, view_split(g, raw=True), budgeted=False)[0]
            order = torch.randperm(len(y), generator=gen)
            for start in range(0, len(y), cfg["batch_size"]):
                idx = order[start : start + cfg["batch_size"]]
                update = logits[idx] + net(logits[idx])
                kl = F.kl_div(F.log_softmax(update, 1), F.softmax(logits[idx], 1), reduction="batchmean")
                loss = F.cross_entropy(update, y[idx]) + (cfg["weight"] if steps <= cfg["budget"] // cfg["n"] else 0) * kl
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    out["prompt"] = p0 + bias
    return out


@pytest.mark.parametrize("method", ["craft", "bbt"])
def test_the_project_runs_the_official_loop(prepared, method):
    make_backend, task = prepared
    refine = method == "craft"
    official = official_loop(make_backend(), task, refine)

    backend = make_backend()
    config = make_config(method, {**SETTINGS, **(CRAFT_SETTINGS if refine else {})})
    box = MeteredBlackBox(backend, SETTINGS["budget"])
    result = get_method(method).run(box, task, config, SEED)

    candidates = [c for c, split in backend.queries if split == "train"]
    assert len(candidates) == GENERATIONS
    for g, (ours, theirs) in enumerate(zip(candidates, official["candidates"])):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6, msg=f"generation {g + 1}'s candidates")
    fitness = [row["fitness"] for row in result.trace]
    np.testing.assert_allclose(fitness, [min(f) for f in official["fitness"]], rtol=1e-5)
    refinements = [(c, split) for c, split in backend.queries if split.startswith("train@")]
    if refine:  # each generation's refinement epoch on its own fresh view, raw features, with the prompt in use
        assert [split for _, split in refinements] == [view_split(g, raw=True) for g in range(1, GENERATIONS + 1)]
    else:
        assert refinements == []
    [(final, _)] = [(c, split) for c, split in backend.queries if split == "val"]
    torch.testing.assert_close(final[0], official["prompt"], rtol=0, atol=1e-5)
    assert result.usage["queries"] == GENERATIONS * SETTINGS["popsize"]


def test_each_generation_trains_on_other_images(prepared):
    """The views the refinement module trains on differ from each other and from the fitness's pass."""
    make_backend, _ = prepared
    backend = make_backend().inner
    first, second = backend.images(view_split(1, raw=True))[0], backend.images(view_split(2, raw=True))[0]
    assert not torch.allclose(first, second)
    assert not torch.allclose(F.normalize(first, dim=-1), backend.images("train")[0])
    torch.testing.assert_close(F.normalize(backend.images(view_split(0, raw=True))[0], dim=-1), backend.images("train")[0])
    assert (first.norm(dim=-1) - 1).abs().max() > 1e-3  # raw: not normalised
