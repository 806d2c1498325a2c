"""CraFT (collaborative fine-tuning) and BBT, faithful to the official CraFT code.

Per CMA-ES generation: score the ``popsize`` candidates ``z`` asked last, each prompt
``p0 + A z`` on the whole few-shot training set (``popsize`` queries), with the
prediction-consistent fitness; tell CMA-ES; set the prompt in use (by default the mean of
``A z`` over a freshly asked population, asked before the next candidates, as the official
loop); train the refinement MLP for one epoch on that prompt's logits over a fresh augmented
view of the training images; evaluate. BBT is the same search without the refinement module
(fitness: cross-entropy only).

Every difference from the official code is a field of :class:`BBTConfig` or :class:`CraFTConfig`
whose default is the official behaviour, except ``cma_eigen_gap``; docs/fidelity.md lists them
with their measured effect.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Generator

import numpy as np
import torch

from craft.blackbox import TRAIN, BlackBox, view_split
from craft.cma_es import PROMPT_SOURCES, STEP_RULES, new_cma
from craft.losses import prompt_fitness, refinement_loss
from craft.methods.base import MethodTraits, RunResult, Steps, Task, Timer, drive, evaluate, evaluate_async, reject_invalid
from craft.prompt import PROJECTION_INITS, PromptGenerator
from craft.refine import RefinementMLP, refinement_optimizer
from craft.transfer import HostCopy, to_device

REFINE_VIEWS = ("fresh", "cached")
REFINE_FEATURES = ("raw", "normalized")


@dataclass
class BBTConfig:
    """Prompt-only CMA-ES search (Black-Box Tuning)."""

    sigma: float = 1.0
    bound: float = 5.0
    std: float = 0.2
    popsize: int = 40
    intrinsic_dim: int = 512
    ctx_init: str = "a photo of a"
    budget: int | None = None  # None: the black box's (a sweep gives the cell's: by shots, as the official scripts)
    eval_every: int = 10
    # Generations between CMA-ES's eigendecompositions of its covariance, in units of pycma's own
    # interval 1 / (10 N (c1 + c_mu)) (1: pycma's default, the official code's). At 10 it falls
    # from every 2.4 to every 24 generations at N = 512, popsize 40: they are the largest part of a
    # run's CPU time. Time and accuracy, measured: docs/fidelity.md.
    cma_eigen_gap: float = 10.0
    # CMA-ES's step-size rule, pinned whatever pycma is installed: csa (the official code's) or tpa
    # (pycma 4.5's default at dimension >= 300, which refuses a second ask per tell).
    cma_step_rule: str = "csa"
    # The prompt in use after each tell: mean (of a freshly asked population, the official loop),
    # candidates (the mean of the next candidates: one ask per tell), xbest (the best candidate
    # so far: the official ImageNet scripts).
    prompt_from: str = "mean"
    # The projection A: normal, N(0, std^2) (the official code); uniform, torch's default Linear
    # init U(-1/sqrt(intrinsic_dim), 1/sqrt(intrinsic_dim)) (the official ImageNet scripts; std unused).
    projection_init: str = "normal"

    def __post_init__(self) -> None:  # bad values fail where the config is read, not mid-sweep
        _validate(self)


@dataclass
class CraFTConfig(BBTConfig):
    """CraFT: BBT's search plus the refinement module and the prediction-consistent loss.

    ``weight`` is the official single loss weight; ``lambda_i`` (prompt side) and
    ``lambda_o`` (refinement side) default to it. The refinement KL term is used while
    ``queries <= budget / n``.
    """

    weight: float = 0.1
    lambda_i: float | None = None
    lambda_o: float | None = None
    n: int = 4
    lr: float = 0.001
    batch_size: int = 256
    hidden: int = 256
    # The refinement module's training images each generation: fresh (a new augmented view, as the
    # official loop re-augments and re-encodes them) or cached (the fitness's augmented pass).
    refine_views: str = "fresh"
    # Their image features: raw (not normalised, as the official loop: logits scale with each
    # feature's norm) or normalized (as fitness and test use them).
    refine_features: str = "raw"


def _validate(cfg: BBTConfig) -> None:
    finite = math.isfinite  # an infinite step size or weight runs, and reports NaN or nonsense as trained
    checks = {
        "sigma": finite(cfg.sigma) and cfg.sigma > 0,
        "bound": cfg.bound >= 0,
        "std": finite(cfg.std) and cfg.std > 0,
        "popsize": cfg.popsize >= 2,
        "intrinsic_dim": cfg.intrinsic_dim >= 1,
        "ctx_init": bool(str(cfg.ctx_init).strip()),  # the prompt's tokens: none leaves nothing to search
        "eval_every": cfg.eval_every >= 1,
        "cma_eigen_gap": cfg.cma_eigen_gap > 0,
        "cma_step_rule": cfg.cma_step_rule in STEP_RULES,
        "prompt_from": cfg.prompt_from in PROMPT_SOURCES,
        "projection_init": cfg.projection_init in PROJECTION_INITS,
    }
    expected = [
        f"cma_step_rule in {', '.join(STEP_RULES)}",
        f"prompt_from in {', '.join(PROMPT_SOURCES)}",
        f"projection_init in {', '.join(PROJECTION_INITS)}",
        "finite sigma and std > 0, a non-empty ctx_init",
    ]
    if isinstance(cfg, CraFTConfig):
        checks.update(n=cfg.n >= 1, lr=finite(cfg.lr) and cfg.lr > 0, batch_size=cfg.batch_size >= 1, hidden=cfg.hidden >= 1,
                      weight=finite(cfg.weight) and cfg.weight >= 0,
                      lambda_i=cfg.lambda_i is None or (finite(cfg.lambda_i) and cfg.lambda_i >= 0),
                      lambda_o=cfg.lambda_o is None or (finite(cfg.lambda_o) and cfg.lambda_o >= 0),
                      refine_views=cfg.refine_views in REFINE_VIEWS, refine_features=cfg.refine_features in REFINE_FEATURES)
        expected += [f"refine_views in {', '.join(REFINE_VIEWS)}", f"refine_features in {', '.join(REFINE_FEATURES)}",
                     "finite lr > 0, finite weight, lambda_i and lambda_o >= 0"]
    reject_invalid(cfg, checks, "; ".join(expected))
    if cfg.budget is not None and cfg.budget < cfg.popsize:
        raise ValueError(
            f"budget {cfg.budget} is less than one generation of the search, {cfg.popsize} queries (popsize); "
            f"give budget >= {cfg.popsize}, or leave it unset for the default"
        )
    if cfg.prompt_from == "mean" and cfg.cma_step_rule == "tpa":
        raise ValueError(
            "prompt_from='mean' asks CMA-ES twice per tell, which cma_step_rule='tpa' refuses; "
            "use cma_step_rule='csa' (the official code's) or prompt_from='candidates'"
        )


def refinement_split(cfg: CraFTConfig, generation: int) -> str:
    """The image set the refinement module trains on in ``generation`` (see :class:`CraFTConfig`)."""
    raw = cfg.refine_features == "raw"
    if cfg.refine_views == "fresh":
        return view_split(generation, raw)
    return view_split(0, raw) if raw else TRAIN


def _search(box: BlackBox, task: Task, cfg: BBTConfig, seed: int, refine: bool) -> Generator[None, None, tuple]:
    """The search as a generator (see :data:`craft.methods.base.Steps`); returns
    ``(metrics, trace, mlp, ctx)``. It yields after queueing a generation's fitness (its candidates
    were queried with the previous generation's refinement query, in one pass), and after queueing
    an evaluation: where it next waits for its device; and, when its
    CMA-ES runs in a worker process (:func:`craft.cma_es.new_cma`), after sending it the fitness."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    budget = box.remaining() if cfg.budget is None else min(cfg.budget, box.remaining())  # the cell's, in the box
    p0 = box.embed_words(cfg.ctx_init)
    device = torch.device(box.info.device)  # where the logits arrive: fitness and refinement run there
    prompt = PromptGenerator(p0, cfg.intrinsic_dim, cfg.std, gen, cfg.projection_init).to(device)
    y = to_device(task.labels["train"], device)
    n_classes = len(task.classnames)

    mlp = opt = None
    lambda_i = lambda_o = 0.0
    if refine:
        assert isinstance(cfg, CraFTConfig)
        lambda_i = cfg.weight if cfg.lambda_i is None else cfg.lambda_i
        lambda_o = cfg.weight if cfg.lambda_o is None else cfg.lambda_o
        mlp = RefinementMLP(n_classes, cfg.hidden).to(device)
        opt = refinement_optimizer(mlp, cfg.lr)

    generations = budget // cfg.popsize
    es = new_cma(cfg.prompt_from, cfg.intrinsic_dim, cfg.sigma, cfg.popsize, cfg.bound, seed, cfg.cma_eigen_gap,
                 generations, cfg.cma_step_rule)
    trace: list[dict] = []
    losses_due: list[tuple[dict, HostCopy]] = []  # refinement losses (summed over the images) on their way to the host
    ctx = prompt(torch.zeros(cfg.intrinsic_dim, device=device))
    metrics: dict[str, float] = {}
    try:
        solutions = es.ask()
        logits = box.logits(prompt(_z(solutions, device)), TRAIN) if generations else None
        for g in range(1, generations + 1):
            with torch.no_grad():
                fitness = HostCopy(prompt_fitness(logits, y, lambda_i, mlp))
            del logits  # none held while others take their turn (2.6 GB a generation at ImageNet's shapes)
            yield
            values = fitness.get().tolist()
            _settle(losses_due, len(y))
            es.tell(solutions, values)
            if es.remote:
                yield  # its worker process tells and asks while other runs take their turn
            solutions = es.ask()
            ctx = prompt(to_device(torch.as_tensor(es.prompt_z, dtype=torch.float32), device))

            row = {"generation": g, "queries": box.usage.queries, "fitness": min(values)}
            # The next generation's candidates are queried with the prompt in use, in one call: one pass
            # of the model for both; their fitness waits for the refinement epoch below. Not before an
            # evaluation, whose report may end the run (a search's pruned trial): they come after it.
            evaluating = g % cfg.eval_every == 0 or g == generations
            following = [] if evaluating else [(prompt(_z(solutions, device)), True)]
            if mlp is not None:
                assert isinstance(cfg, CraFTConfig) and opt is not None
                splits = [refinement_split(cfg, g)] + [TRAIN] * len(following)
                train_logits, *following_logits = box.logits_many([(ctx, False), *following], splits)
                train_logits = train_logits[0]
                kl_weight = lambda_o if row["queries"] <= budget / cfg.n else 0.0
                order = to_device(torch.randperm(len(y), generator=gen), device)
                losses = []
                mlp.train()
                for start in range(0, len(y), cfg.batch_size):
                    idx = order[start : start + cfg.batch_size]
                    loss = refinement_loss(mlp(train_logits[idx]), train_logits[idx], y[idx], kl_weight)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    losses.append(loss.detach() * len(idx))  # summed once: no host sync per batch
                mlp.eval()
                del train_logits
                losses_due.append((row, HostCopy(torch.stack(losses).sum())))
            else:
                following_logits = box.logits_many(following, TRAIN)
            logits = following_logits[0] if following_logits else None
            del following_logits  # else its list would hold the logits through the fitness's yield
            if evaluating:
                finish = evaluate_async(box, task, ctx, mlp)
                yield
                _settle(losses_due, len(y))
                metrics = finish()
                row.update(metrics)
                if task.on_eval is not None:
                    task.on_eval(row)
                if g < generations:
                    logits = box.logits(prompt(_z(solutions, device)), TRAIN)
            trace.append(row)
        _settle(losses_due, len(y))
    finally:
        es.close()  # a worker process goes back to its pool, also when the run fails
    if generations == 0:
        metrics = evaluate(box, task, ctx, mlp)
    return metrics, trace, mlp, ctx


def _z(solutions: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """CMA-ES's candidates as a float32 ``pop x dim`` tensor on ``device``."""
    return to_device(torch.as_tensor(np.array(solutions), dtype=torch.float32), device)


def _settle(due: list[tuple[dict, HostCopy]], n_images: int) -> None:
    """Write the refinement losses (summed over ``n_images``) into their trace rows; waits for those not on the host yet."""
    for row, loss in due:
        row["train_loss"] = float(loss.get()) / n_images
    due.clear()


class BBT(MethodTraits):
    """BBT: the prompt search alone. Learned: the prompt's ``intrinsic_dim`` coordinates (stored as the prompt)."""

    name = "bbt"
    config_cls: type[BBTConfig] = BBTConfig
    refine = False  # no refinement module
    # Its per-generation work is on every candidate's logits: a sweep may run it beside the model,
    # its logits on the model's device (benchmark.serve.colocate).
    colocatable = True

    def run(self, box: BlackBox, task: Task, config: BBTConfig, seed: int) -> RunResult:
        return drive(self.steps(box, task, config, seed))

    def steps(self, box: BlackBox, task: Task, config: BBTConfig, seed: int) -> Steps:
        """The run as :data:`craft.methods.base.Steps`, for :mod:`craft.interleave`."""
        timer = Timer()
        metrics, trace, mlp, ctx = yield from _search(box, task, config, seed, refine=self.refine)
        params, nbytes = config.intrinsic_dim, ctx.numel() * 4
        if mlp is not None:
            params, nbytes = params + sum(p.numel() for p in mlp.parameters()), nbytes + mlp.size_bytes()
        return RunResult(
            self.name, asdict(config), metrics, box.usage.as_dict(), trace,
            learned_params=params, learned_bytes=nbytes, wall_s=timer(),
        )


class CraFT(BBT):
    """CraFT: BBT's search with the refinement module, which it learns too."""

    name = "craft"
    config_cls = CraFTConfig
    refine = True
