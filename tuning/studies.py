"""From a config to its studies: one per (method, dataset, shots, backbone) unless pooled.

A study's name is unique to what decides its objective (cells, seeds, fixed hyperparameters,
space, milestones), so that changing any of them starts a new study instead of mixing trials
scored differently; the number of trials, the sampler and the concurrency are not part of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from benchmark.errors import UserError
from benchmark.sweep.cell import Cell
from tuning.config import SearchConfig
from tuning.space import Space

# Methods whose queries grow by ``popsize`` per CMA-ES generation and whose ``eval_every`` counts
# generations: their evaluations can be placed exactly on the milestones.
GENERATION_METHODS = ("craft", "bbt")


@dataclass(frozen=True)
class Target:
    """One (dataset, shots, backbone) a study is scored on."""

    dataset: str
    shots: int
    backbone: str
    weights: str


@dataclass(frozen=True)
class Milestones:
    """Where a trial reports validation accuracy: query counts, the last one its whole budget.

    ``eval_every`` (generations) is set for :data:`GENERATION_METHODS` so that evaluations land on
    the milestones; other methods evaluate on their own schedule and report the first evaluation
    at or past each milestone.
    """

    budget: int
    queries: tuple[int, ...]
    eval_every: int | None = None

    @property
    def grace(self) -> int:
        return self.queries[0]


def plan_milestones(method: str, budget: int, popsize: int | None, cfg: SearchConfig) -> Milestones:
    """Milestones at ``grace_fraction * reduction_factor**k`` of the budget, and the budget itself."""
    p = cfg.pruning
    if budget == 0:  # a white-box reference: no queries, one report at the end
        return Milestones(0, (0,))
    if method in GENERATION_METHODS:
        assert popsize is not None
        gens = budget // popsize
        if gens < 1:
            raise UserError(f"{cfg.path}: a {method} budget of {budget} queries is less than one generation of {popsize}")
        marks = []
        if p is not None:
            g = max(1, math.ceil(p.grace_fraction * gens))
            while g < gens:
                marks.append(g)
                g *= p.reduction_factor
        marks.append(gens)
        return Milestones(gens * popsize, tuple(m * popsize for m in marks), eval_every=marks[0])
    marks = []
    if p is not None:
        f = p.grace_fraction
        while f < 1:
            marks.append(max(1, math.ceil(f * budget)))
            f *= p.reduction_factor
    marks.append(budget)
    return Milestones(budget, tuple(sorted(set(marks))))


@dataclass(frozen=True)
class Study:
    """One Optuna study: a method, the targets and seeds a trial runs on, fixed hyperparameters, a space."""

    name: str
    method: str
    targets: tuple[Target, ...]
    search_seeds: tuple[int, ...]
    space: Space
    milestones: Milestones
    root: str | None = None
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False, compare=False)

    def hparams(self, dataset: str, params: dict[str, Any]) -> dict[str, Any]:
        """A trial's hyperparameters on ``dataset``, as a benchmark cell takes them (no eval_every)."""
        return {**self.fixed.get(dataset, {}), **params}

    def search_cells(self, params: dict[str, Any]) -> list[Cell]:
        """The cells one trial runs (scored on validation): every target and search seed."""
        every = {} if self.milestones.eval_every is None else {"eval_every": self.milestones.eval_every}
        return [
            Cell(self.method, t.dataset, t.shots, seed, t.backbone, t.weights,
                 {**self.hparams(t.dataset, params), **every}, root=self.root)
            for t in self.targets for seed in self.search_seeds
        ]

    @property
    def cells_per_trial(self) -> int:
        return len(self.targets) * len(self.search_seeds)

    @property
    def datasets(self) -> list[str]:
        return sorted({t.dataset for t in self.targets})


def _budget_and_popsize(cfg: SearchConfig, method: str, target: Target) -> tuple[int, int | None]:
    fixed = cfg.fixed(method, target.dataset)
    cell = Cell(method, target.dataset, target.shots, cfg.search_seeds[0], target.backbone, target.weights, fixed)
    popsize = cell.config.popsize if method in GENERATION_METHODS else None
    return cell.budget(), popsize


def _label(values: list) -> str:
    return "+".join(str(v) for v in sorted(set(values)))


def plan_studies(cfg: SearchConfig) -> list[Study]:
    """The studies of ``cfg``, in a stable order."""
    studies = []
    for method in cfg.methods:
        groups: dict[tuple, list[Target]] = {}
        for ds, k, (bb, w) in product(cfg.datasets, cfg.shots, cfg.backbones.items()):
            key = (None if "dataset" in cfg.pool else ds, None if "shots" in cfg.pool else k,
                   None if "backbone" in cfg.pool else bb)
            groups.setdefault(key, []).append(Target(ds, k, bb, w))
        for targets in groups.values():
            shape = {_budget_and_popsize(cfg, method, t) for t in targets}
            if len(shape) > 1:
                raise UserError(
                    f"{cfg.path}: the pooled {method} targets differ in query budget or popsize ({sorted(shape)}); "
                    "a pooled study needs one budget (set it under hparams) or no pooling"
                )
            budget, popsize = shape.pop()
            milestones = plan_milestones(method, budget, popsize, cfg)
            fixed = {t.dataset: cfg.fixed(method, t.dataset) for t in targets}
            identity = json.dumps({
                "method": method, "targets": [list(t.__dict__.values()) for t in targets],
                "seeds": cfg.search_seeds, "fixed": fixed, "space": cfg.spaces[method].fingerprint(),
                "milestones": list(milestones.queries), "root": cfg.root,
            }, sort_keys=True, default=str)
            digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
            name = "/".join([
                cfg.name, method, _label([t.dataset for t in targets]), _label([t.shots for t in targets]) + "shot",
                _label([t.backbone for t in targets]), digest,
            ])
            studies.append(Study(name, method, tuple(targets), tuple(cfg.search_seeds), cfg.spaces[method],
                                 milestones, cfg.root, fixed))
    return studies
