"""pycma as BBT and CraFT drive it: the step-size rule pinned, the prompt in use chosen as configured."""

from __future__ import annotations

import cma
import numpy as np
import pytest
import torch

from craft.cma_es import STEP_RULES, RunCMA, cma_strategy, population_classes, pycma_seed
from craft.methods import make_config
from craft.prompt import PromptGenerator


def test_dimension_512_uses_csa_whatever_pycma_defaults_to():
    default = cma.CMAEvolutionStrategy(np.zeros(512), 1.0, {"verbose": -9, "popsize": 40, "seed": 1})
    ours = cma_strategy(512, 1.0, 40, 5.0, 1, 10.0)
    assert type(ours.adapt_sigma) is cma.sigma_adaptation.CMAAdaptSigmaCSA
    # pycma 4.5 and later pick TPA here by default: the pin is what keeps the official rule
    assert type(default.adapt_sigma) in (cma.sigma_adaptation.CMAAdaptSigmaCSA, cma.sigma_adaptation.CMAAdaptSigmaTPA)
    assert type(cma_strategy(512, 1.0, 40, 5.0, 1, 10.0, step_rule="tpa").adapt_sigma) is cma.sigma_adaptation.CMAAdaptSigmaTPA
    run = RunCMA(make_config("craft", {}).prompt_from, 512, 1.0, 40, 5.0, 1, 10.0)
    assert type(run.es.adapt_sigma) is cma.sigma_adaptation.CMAAdaptSigmaCSA
    with pytest.raises(ValueError, match="unknown CMA-ES step-size rule 'auto'"):
        cma_strategy(16, 1.0, 6, 5.0, 1, 10.0, step_rule="auto")


def test_the_official_order_needs_csa():
    with pytest.raises(ValueError, match="prompt_from='mean' asks CMA-ES twice per tell"):
        make_config("bbt", {"cma_step_rule": "tpa"})
    assert make_config("bbt", {"cma_step_rule": "tpa", "prompt_from": "candidates"}).cma_step_rule == "tpa"


def test_the_run_seed_is_pycmas_seed_except_zero():
    assert [pycma_seed(s) for s in (1, 2, 3)] == [1, 2, 3]
    assert pycma_seed(0) != 0  # pycma reads 0 as "from the clock"
    first = cma_strategy(16, 1.0, 6, 0.0, 0, 1.0).ask()  # pycma draws from numpy's global state: one at a time
    again = cma_strategy(16, 1.0, 6, 0.0, 0, 1.0).ask()
    assert np.array_equal(np.array(first), np.array(again))


def _sphere(pop):
    return [float(np.sum((np.asarray(x) - 0.3) ** 2)) for x in pop]


@pytest.mark.parametrize("prompt_from", ["mean", "candidates", "xbest"])
def test_the_prompt_in_use_is_what_prompt_from_says(prompt_from):
    run = RunCMA(prompt_from, 8, 0.5, 6, 0.0, 3, 1.0)  # keeps a random state of its own
    twin = cma_strategy(8, 0.5, 6, 0.0, 3, 1.0)  # the same strategy, driven by hand on numpy's global state
    candidates = twin.ask()
    best, best_value = None, np.inf
    for _ in range(6):
        ours = run.ask()
        assert np.array_equal(np.array(ours), np.array(candidates))
        values = _sphere(ours)
        if min(values) < best_value:
            best, best_value = ours[int(np.argmin(values))], min(values)
        run.tell(ours, values)
        twin.tell(candidates, values)
        if prompt_from == "mean":  # a fresh population first, then the next candidates
            expected = np.mean(twin.ask(), axis=0)
            candidates = twin.ask()
        else:
            candidates = twin.ask()
            expected = np.mean(candidates, axis=0) if prompt_from == "candidates" else best
        np.testing.assert_array_equal(run.prompt_z, expected)


def test_projection_inits():
    gen = torch.Generator().manual_seed(0)
    p0 = torch.zeros(4, 64)
    normal = PromptGenerator(p0, 512, 1.0, gen, "normal").A
    uniform = PromptGenerator(p0, 512, 1.0, gen, "uniform").A  # torch's Linear(512, ...) default; std unused
    assert normal.shape == uniform.shape == (256, 512)
    assert abs(normal.std().item() - 1.0) < 0.02
    bound = 1 / 512**0.5
    assert uniform.abs().max().item() <= bound and uniform.abs().max().item() > 0.99 * bound
    assert abs(uniform.std().item() - bound / 3**0.5) < 0.001  # about 0.0255, 39 times below N(0, 1)'s
    with pytest.raises(ValueError, match="unknown projection init 'kaiming'"):
        PromptGenerator(p0, 512, 1.0, gen, "kaiming")


@pytest.mark.parametrize("bound", [5.0, 1.2])
@pytest.mark.parametrize("step_rule", ["csa", "tpa"])
def test_population_repair_gives_pycmas_candidates(bound, step_rule, monkeypatch):
    """Candidates repaired into the box a population at a time (population_classes) are those of
    pycma's own strategy and BoundTransform, generation after generation: at the runs' bound of 5,
    where few coordinates need repair, and at 1.2, where most do; under CSA and under TPA (whose
    asks inject mirrored candidates)."""
    from cma.boundary_handler import BoundTransform

    strategy, handler = population_classes()
    batches = []
    whole = handler._repair_all
    monkeypatch.setattr(handler, "_repair_all", lambda self, pop: batches.append(len(pop)) or whole(self, pop))

    def trace(cls, boundary):
        opts = {"popsize": 12, "seed": 7, "verbose": -9, "bounds": [-bound, bound], "BoundaryHandler": boundary,
                "AdaptSigma": getattr(cma.sigma_adaptation, STEP_RULES[step_rule])}
        es = cls(np.zeros(24), 1.0, opts)
        target = np.random.default_rng(0).normal(0, 2 * bound, 24)  # partly outside the box: candidates pushed to the bounds
        asked = []
        for _ in range(60):
            xs = es.ask()
            asked.append(np.array(xs))
            es.tell(xs, [float(np.sum((x - target) ** 2)) for x in xs])
            if step_rule == "csa":  # a second ask before the next tell, as the official loop's prompt (TPA forbids it)
                asked.append(np.array(es.ask()))
        return np.stack(asked), es.boundary_handler

    theirs, _ = trace(cma.CMAEvolutionStrategy, BoundTransform)
    ours, used = trace(strategy, handler)
    assert isinstance(used, handler) and len(batches) >= len(theirs)  # every ask went through one population repair
    assert theirs.tobytes() == ours.tobytes()
    assert abs(theirs).max() <= bound and (abs(theirs) > bound * 0.9).any()  # the bounds were reached
    assert isinstance(cma_strategy(8, 1.0, 6, 5.0, 1, 1.0), strategy)
