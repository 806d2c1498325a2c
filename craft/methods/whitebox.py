"""White-box references: their configs and registry entries. They are trained beside the model.

CoOp learns context vectors by backprop through the text encoder, which a black box does not
expose, so its ``run`` refuses a :class:`~craft.blackbox.BlackBox`; the sweep's cell runner sends
it to the model server instead (``benchmark.serve.whitebox``). Registering it here gives it the same
config validation, cell ids and listings as the black-box methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from craft.blackbox import BlackBox
from craft.methods.base import SERVER, MethodTraits, RunResult, Task, reject_invalid
from craft.schedule import DasslSchedule

# CoOp's epochs by shots (its scripts: rn50_ep50 for 1 shot, rn50_ep100 for 2/4, rn50 for 8/16).
COOP_EPOCHS_BY_SHOTS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}
COOP_IMAGENET_EPOCHS = 50


@dataclass
class CoOpConfig(DasslSchedule):
    """CoOp (Zhou et al.), unified context, class token at the end.

    ``ctx_init=""``: ``n_ctx`` (default 16) vectors drawn from N(0, 0.02^2), as CoOp's few-shot
    runs; else the embedded words, and ``n_ctx`` (if given) must be their token count.
    ``epochs=None``: by shots, as CoOp's scripts. SGD with momentum, Dassl's weight decay,
    one warm-up epoch at ``warmup_lr``, then cosine. ``train_views``: ``fresh`` trains each epoch
    on a new augmented view of the training images, as Dassl re-augments every epoch; ``cached``
    on the one augmented pass the black-box methods score.
    """

    n_ctx: int | None = None
    ctx_init: str = ""
    momentum: float = 0.9
    train_views: str = "fresh"

    def __post_init__(self) -> None:  # bad values fail where the config is read, not mid-sweep
        validate_coop(self)


def coop_epochs(cfg: CoOpConfig, shots: int, dataset: str) -> int:
    """The config's epochs, else CoOp's for ``shots`` (50 on ImageNet)."""
    if cfg.epochs is not None:
        return cfg.epochs
    if dataset == "imagenet":
        return COOP_IMAGENET_EPOCHS
    listed = [k for k in COOP_EPOCHS_BY_SHOTS if k <= shots] or [min(COOP_EPOCHS_BY_SHOTS)]
    return COOP_EPOCHS_BY_SHOTS[max(listed)]  # between CoOp's shots: those of the largest below


def validate_coop(cfg: CoOpConfig) -> None:
    """Reject values CoOp cannot train with, naming each."""
    checks = {
        **cfg.schedule_checks(),
        "n_ctx": cfg.n_ctx is None or cfg.n_ctx >= 1,
        "momentum": 0 <= cfg.momentum < 1,
        "train_views": cfg.train_views in ("fresh", "cached"),
    }
    reject_invalid(cfg, checks, "n_ctx/batch_size/epochs/eval_every >= 1, finite lr/warmup_lr > 0, 0 <= momentum < 1, "
                                "train_views fresh or cached")


class CoOp(MethodTraits):
    """White-box CoOp: a labelled reference that needs the model, not a black-box method."""

    name = "coop"
    config_cls = CoOpConfig
    runs_on = SERVER  # needs the model's weights: trained on the model server

    def run(self, box: BlackBox, task: Task, config: Any, seed: int) -> RunResult:
        raise TypeError(
            "coop is a white-box reference: it backpropagates through the text encoder, which a black box "
            "does not expose; run it as a cell (benchmark.sweep.run_cell sends it to the model server)"
        )
