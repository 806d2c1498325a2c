"""BPT-VLM (Yu et al., 2023, "Black-box Prompt Tuning for Vision-Language Model as a Service").

One CMA-ES (pycma, :mod:`craft.cma_es`) searches ``z = [z_L, z_V]`` jointly, as the official
``shallow_cma`` (``BBT_VL_Shallow.py``): ``z_L`` (``intrinsic_dim_l``) projects to a text prompt of
``n_prompt_tokens_l`` context tokens, ``A_L z_L`` (no initial words: the official ``init_prompt`` is
None), and ``z_V`` (``intrinsic_dim_v``) to ``n_prompt_tokens_v`` shallow visual prompt tokens,
``A_V z_V``, appended after the ViT's class and patch tokens. The projections are fixed random,
drawn as the official code draws them (``model/Shallow_Prompt_CLIP.py``):

* ``A_L ~ N(0, (token_std / (sqrt(intrinsic_dim_l) * sigma))^2)``, ``token_std`` the standard deviation
  of the token embedding;
* ``A_V ~ N(patch_mean * fan_in / intrinsic_dim_v, (patch_std * sqrt(fan_in / intrinsic_dim_v) * sigma)^2)``
  from the patch-embedding convolution's weights (``fan_in``: 3,072 in the official ViT-B/32 code).

The black box publishes these four numbers (``BackendInfo.init_stats``). Fitness: summed
cross-entropy over the whole few-shot training set divided by its size; each candidate is one query
and re-encodes every training image (an image-side query). The prompt reported is the candidate with
the lowest training loss so far (the official ``best_prompt_text`` / ``best_prompt_image``), tested every
``test_every`` generations and at the end; the reported accuracy is the last test's (the official
code prints the best test accuracy so far: ``select: best_test`` reports that, marked in the tables).
Budgets by dataset are the official config's (``configs/shallow_prompt.yaml``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from craft.blackbox import TRAIN, BlackBox, VisualPrompt
from craft.cma_es import new_cma
from craft.methods.base import MethodTraits, RunResult, Task, Timer, accuracy, reject_invalid, restrict_logits

# configs/shallow_prompt.yaml of the official code: the query budget and test interval (generations)
# per dataset, by this harness's dataset keys. Datasets it does not name take DEFAULT_BUDGET.
OFFICIAL_BUDGETS = {
    "dtd": 36000, "ucf101": 25200, "eurosat": 25200, "stanford_cars": 25200, "oxford_pets": 3600,
    "food101": 3600, "caltech101": 3600, "sun397": 18000, "imagenet": 14400,
}
OFFICIAL_TEST_EVERY = {"imagenet": 60}
DEFAULT_BUDGET = 3600  # the smallest official budget
DEFAULT_TEST_EVERY = 12
SELECTIONS = ("last", "best_test")


@dataclass
class BPTVLMConfig:
    """BPT-VLM's hyperparameters: the official shallow config (ViT). ``budget=None``: by dataset;
    ``image_budget=None``: every query's training images (``budget x shots x classes``)."""

    popsize: int = 30
    sigma: float = 1.0
    bound: float = 0.0
    intrinsic_dim_l: int = 500
    intrinsic_dim_v: int = 500
    n_prompt_tokens_l: int = 8
    n_prompt_tokens_v: int = 5
    budget: int | None = None
    image_budget: int | None = None
    test_every: int | None = None
    select: str = "last"
    cma_eigen_gap: float = 1.0  # pycma's own interval (the official code's)

    def __post_init__(self) -> None:
        finite = math.isfinite
        reject_invalid(self, {
            "popsize": self.popsize >= 2, "sigma": finite(self.sigma) and self.sigma > 0, "bound": self.bound >= 0,
            "intrinsic_dim_l": self.intrinsic_dim_l >= 1, "intrinsic_dim_v": self.intrinsic_dim_v >= 1,
            "n_prompt_tokens_l": self.n_prompt_tokens_l >= 1, "n_prompt_tokens_v": self.n_prompt_tokens_v >= 1,
            "budget": self.budget is None or self.budget >= self.popsize,
            "image_budget": self.image_budget is None or self.image_budget >= 0,
            "test_every": self.test_every is None or self.test_every >= 1,
            "select": self.select in SELECTIONS, "cma_eigen_gap": self.cma_eigen_gap > 0,
        }, f"popsize >= 2, finite sigma > 0, dims and token counts >= 1, budget >= popsize, select in {SELECTIONS}")


class Projections:
    """The fixed random projections ``A_L`` (``n_l*width x d_l``) and ``A_V`` (``n_v*vision_width x d_v``),
    drawn from ``gen`` with the official code's means and standard deviations."""

    def __init__(self, cfg: BPTVLMConfig, width: int, vision_width: int, stats: dict[str, float],
                 gen: torch.Generator) -> None:
        self.cfg, self.width, self.vision_width = cfg, width, vision_width
        missing = [k for k in ("token_std", "patch_mean", "patch_std", "patch_fan_in") if k not in stats]
        if missing or vision_width <= 0:
            raise ValueError("BPT-VLM needs a ViT black box that publishes its input layers' statistics "
                             f"(missing: {', '.join(missing) or 'vision tokens'})")
        d_l, d_v, fan_in = cfg.intrinsic_dim_l, cfg.intrinsic_dim_v, stats["patch_fan_in"]
        self.std_l = stats["token_std"] / (math.sqrt(d_l) * cfg.sigma)
        self.mean_v = stats["patch_mean"] * fan_in / d_v
        self.std_v = stats["patch_std"] * math.sqrt(fan_in / d_v) * cfg.sigma
        self.A_L = torch.randn(cfg.n_prompt_tokens_l * width, d_l, generator=gen) * self.std_l
        self.A_V = self.mean_v + torch.randn(cfg.n_prompt_tokens_v * vision_width, d_v, generator=gen) * self.std_v

    def __call__(self, z: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text contexts ``pop x n_l x width`` and visual tokens ``pop x n_v x vision_width`` of ``z`` (``pop x (d_l + d_v)``)."""
        z = torch.as_tensor(np.asarray(z), dtype=torch.float32).reshape(-1, self.cfg.intrinsic_dim_l + self.cfg.intrinsic_dim_v)
        z_l, z_v = z[:, : self.cfg.intrinsic_dim_l], z[:, self.cfg.intrinsic_dim_l :]
        ctx = (z_l @ self.A_L.T).reshape(-1, self.cfg.n_prompt_tokens_l, self.width)
        tokens = (z_v @ self.A_V.T).reshape(-1, self.cfg.n_prompt_tokens_v, self.vision_width)
        return ctx, tokens


def _losses(logits: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Mean cross-entropy over the images, per candidate (the official summed loss / train size)."""
    n_cand, n_img, n_cls = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, n_cls).float(), y.repeat(n_cand), reduction="none")
    return ce.view(n_cand, n_img).mean(1).tolist()


def evaluate_visual(box: BlackBox, task: Task, contexts: torch.Tensor | None, prompt: VisualPrompt) -> dict[str, float]:
    """Top-1 on the eval sets of a text prompt (None: the template) with a visual prompt (one candidate)."""
    out = {}
    for split in task.eval_splits:
        logits = box.image_logits(contexts, prompt, split, budgeted=False)[0].cpu()
        if split in task.class_subsets:
            logits = restrict_logits(logits, task.class_subsets[split])
        out[f"top1_{split}"] = accuracy(logits, task.labels[split])
    return out


class BPTVLM(MethodTraits):
    """BPT-VLM: CMA-ES over a text prompt and a shallow visual prompt, through image-side queries."""

    name = "bpt_vlm"
    config_cls = BPTVLMConfig

    def default_budget(self, config: BPTVLMConfig, shots: int, classes: int, dataset: str, backbone: str = "") -> int:
        return OFFICIAL_BUDGETS.get(dataset, DEFAULT_BUDGET)

    def default_image_budget(self, config: BPTVLMConfig, queries: int, n_train: int, dataset: str) -> int | None:
        return queries * n_train  # each query re-encodes the training set

    def run(self, box: BlackBox, task: Task, config: BPTVLMConfig, seed: int) -> RunResult:
        timer = Timer()
        cfg = config
        if cfg.select == "best_test" and "test" not in task.eval_splits:
            raise ValueError("select='best_test' picks a test on the test set, and this run has none; use select='last'")
        gen = torch.Generator().manual_seed(seed)
        info = box.info
        proj = Projections(cfg, info.width, info.vision_width, info.init_stats, gen)
        y = task.labels[TRAIN].long()
        n_train = len(y)
        budget = box.remaining() if cfg.budget is None else min(cfg.budget, box.remaining())
        images_left = box.images_remaining()
        generations = budget // cfg.popsize
        if images_left is not None:
            generations = min(generations, images_left // max(1, cfg.popsize * n_train))
        test_every = cfg.test_every or OFFICIAL_TEST_EVERY.get(task.dataset, DEFAULT_TEST_EVERY)
        dim = cfg.intrinsic_dim_l + cfg.intrinsic_dim_v
        es = new_cma("xbest", dim, cfg.sigma, cfg.popsize, cfg.bound, seed, cfg.cma_eigen_gap, max(generations, 1), "csa")
        best_z, best_loss = np.zeros(dim), math.inf
        trace: list[dict] = []
        metrics: dict[str, float] = {}
        best_test: dict[str, float] | None = None
        try:
            for g in range(1, generations + 1):
                solutions = es.ask()
                ctx, tokens = proj(np.array(solutions))
                logits = box.image_logits(ctx, VisualPrompt(tokens=tokens), TRAIN).cpu()
                values = _losses(logits, y)
                es.tell(solutions, values)
                i = int(np.argmin(values))
                if values[i] < best_loss:
                    best_loss, best_z = values[i], np.array(solutions[i], copy=True)
                row = {"generation": g, "queries": box.usage.queries, "fitness": min(values)}
                if g % test_every == 0 or g == generations:
                    metrics = self._evaluate(box, task, proj, best_z)
                    row.update(metrics)
                    if "top1_test" in metrics and (best_test is None or metrics["top1_test"] > best_test["top1_test"]):
                        best_test = metrics
                    if task.on_eval is not None:
                        task.on_eval(row)
                trace.append(row)
        finally:
            es.close()
        if generations == 0:
            metrics = self._evaluate(box, task, proj, best_z)
        if cfg.select == "best_test" and best_test is not None:
            metrics = best_test
        n = dim
        return RunResult(self.name, asdict(cfg) | {"budget": budget, "test_every": test_every}, metrics,
                         box.usage.as_dict(), trace, learned_params=n,
                         learned_bytes=4 * (cfg.n_prompt_tokens_l * info.width + cfg.n_prompt_tokens_v * info.vision_width),
                         wall_s=timer())

    @staticmethod
    def _evaluate(box: BlackBox, task: Task, proj: Projections, z: np.ndarray) -> dict[str, float]:
        ctx, tokens = proj(z)
        return evaluate_visual(box, task, ctx, VisualPrompt(tokens=tokens))
