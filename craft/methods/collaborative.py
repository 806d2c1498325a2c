"""CraFT (collaborative fine-tuning) and BBT, faithful to the official CraFT code.

Per CMA-ES generation: ask ``popsize`` candidates ``z``, score each prompt ``p0 + A z`` on
the whole few-shot training set (``popsize`` queries) with the prediction-consistent
fitness, tell CMA-ES, set the prompt in use to the mean of ``A z`` over a freshly asked
population (then scored as the next generation), train the refinement MLP for one epoch on that prompt's logits, evaluate.
BBT is the same search without the refinement module (fitness: cross-entropy only).

One setting differs from pycma's defaults: how often CMA-ES eigendecomposes its covariance
(``cma_eigen_gap``, see :class:`BBTConfig`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Generator

import numpy as np
import torch

from craft.blackbox import BlackBox
from craft.budget import default_budget
from craft.cma_es import new_cma
from craft.losses import prompt_fitness, refinement_loss
from craft.methods.base import RunResult, Steps, Task, Timer, drive, evaluate, evaluate_async, reject_invalid
from craft.prompt import PromptGenerator
from craft.refine import RefinementMLP, refinement_optimizer
from craft.transfer import HostCopy, to_device


@dataclass
class BBTConfig:
    """Prompt-only CMA-ES search (Black-Box Tuning)."""

    sigma: float = 1.0
    bound: float = 5.0
    std: float = 0.2
    popsize: int = 40
    intrinsic_dim: int = 512
    ctx_init: str = "a photo of a"
    budget: int | None = None  # None: by shots, as the official scripts
    eval_every: int = 10
    # Generations between CMA-ES's eigendecompositions of its covariance C, in units of pycma's
    # own interval 1 / (10 N (c1 + c_mu)) (1: pycma's default). C moves by a fraction
    # (c1 + c_mu) per generation, so at 10 it moves by 1/N of itself between decompositions
    # instead of 1/(10 N). At N = 512, popsize 40 that is every 24 generations instead of 2.4,
    # and pycma's time per generation falls from 19.0 to 8.2 ms, the largest part of a run's
    # CPU time (python -m benchmarks.cma_cost). Accuracy on the built-in suite stays within
    # seed noise (python -m benchmarks.cma_cost --accuracy).
    cma_eigen_gap: float = 10.0

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


def _validate(cfg: BBTConfig) -> None:
    checks = {
        "sigma": cfg.sigma > 0,
        "bound": cfg.bound >= 0,
        "std": cfg.std > 0,
        "popsize": cfg.popsize >= 2,
        "intrinsic_dim": cfg.intrinsic_dim >= 1,
        "eval_every": cfg.eval_every >= 1,
        "cma_eigen_gap": cfg.cma_eigen_gap > 0,
        "budget": cfg.budget is None or cfg.budget >= 0,
    }
    if isinstance(cfg, CraFTConfig):
        checks.update(n=cfg.n >= 1, lr=cfg.lr > 0, batch_size=cfg.batch_size >= 1, hidden=cfg.hidden >= 1)
    reject_invalid(cfg, checks)


def _search(box: BlackBox, task: Task, cfg: BBTConfig, seed: int, refine: bool) -> Generator[None, None, tuple]:
    """The search as a generator (see :data:`craft.methods.base.Steps`); returns
    ``(metrics, trace, mlp, ctx)``. It yields after queueing a generation's fitness (its candidates
    were queried with the previous generation's refinement query, in one pass), and after queueing
    an evaluation: where it next waits for its device; and, when its
    CMA-ES runs in a worker process (:func:`craft.cma_es.new_cma`), after sending it the fitness."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    budget = min(cfg.budget or default_budget(task.shots, task.dataset), box.remaining())
    p0 = box.embed_words(cfg.ctx_init)
    device = torch.device(box.info.device)  # where the logits arrive: fitness and refinement run there
    prompt = PromptGenerator(p0, cfg.intrinsic_dim, cfg.std, gen).to(device)
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
    es = new_cma(cfg.intrinsic_dim, cfg.sigma, cfg.popsize, cfg.bound, seed + 1, cfg.cma_eigen_gap, generations)
    trace: list[dict] = []
    losses_due: list[tuple[dict, HostCopy]] = []  # refinement losses (summed over the images) on their way to the host
    ctx = prompt(torch.zeros(cfg.intrinsic_dim, device=device))
    metrics: dict[str, float] = {}
    try:
        solutions = es.ask()
        logits = box.logits(prompt(_z(solutions, device)), "train") if generations else None
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
            # The prompt in use: the mean of a freshly asked population, which is also the next
            # generation's candidates (pycma allows one ask per tell when its step-size rule injects samples).
            solutions = es.ask()
            ctx = prompt(to_device(torch.as_tensor(np.array(solutions)).mean(0).float(), device))

            row = {"generation": g, "queries": box.usage.queries, "fitness": min(values)}
            # The next generation's candidates are queried with the prompt in use, in one call: one pass
            # of the model for both; their fitness waits for the refinement epoch below. Not before an
            # evaluation, whose report may end the run (a search's pruned trial): they come after it.
            evaluating = g % cfg.eval_every == 0 or g == generations
            following = [] if evaluating else [(prompt(_z(solutions, device)), True)]
            if mlp is not None:
                assert isinstance(cfg, CraFTConfig) and opt is not None
                train_logits, *following_logits = box.logits_many([(ctx, False), *following], "train")
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
                following_logits = box.logits_many(following, "train")
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
                    logits = box.logits(prompt(_z(solutions, device)), "train")
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


class BBT:
    name = "bbt"
    config_cls = BBTConfig
    # Its per-generation work is on every candidate's logits: a sweep may run it beside the model,
    # its logits on the model's device (benchmark.colocate).
    colocatable = True

    def run(self, box: BlackBox, task: Task, config: BBTConfig, seed: int) -> RunResult:
        return drive(self.steps(box, task, config, seed))

    def steps(self, box: BlackBox, task: Task, config: BBTConfig, seed: int) -> Steps:
        """The run as :data:`craft.methods.base.Steps`, for :mod:`craft.interleave`."""
        timer = Timer()
        metrics, trace, _, ctx = yield from _search(box, task, config, seed, refine=False)
        return RunResult(
            self.name, asdict(config), metrics, box.usage.as_dict(), trace,
            learned_params=config.intrinsic_dim, learned_bytes=ctx.numel() * 4, wall_s=timer(),
        )


class CraFT:
    name = "craft"
    config_cls = CraFTConfig
    colocatable = True  # as BBT

    def run(self, box: BlackBox, task: Task, config: CraFTConfig, seed: int) -> RunResult:
        return drive(self.steps(box, task, config, seed))

    def steps(self, box: BlackBox, task: Task, config: CraFTConfig, seed: int) -> Steps:
        """The run as :data:`craft.methods.base.Steps`, for :mod:`craft.interleave`."""
        timer = Timer()
        metrics, trace, mlp, ctx = yield from _search(box, task, config, seed, refine=True)
        assert mlp is not None
        n_params = sum(p.numel() for p in mlp.parameters())
        return RunResult(
            self.name, asdict(config), metrics, box.usage.as_dict(), trace,
            learned_params=n_params + config.intrinsic_dim,
            learned_bytes=mlp.size_bytes() + ctx.numel() * 4, wall_s=timer(),
        )
