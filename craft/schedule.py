"""Learning-rate schedules of the Dassl trainers behind CoOp and CBBT."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class DasslSchedule:
    """The training fields that CBBT's and CoOp's configs share (a mixin; their defaults are both methods'):
    ``epochs`` of mini-batches of ``batch_size``, at ``lr`` with ``weight_decay`` after ``warmup_epochs``
    at ``warmup_lr`` (:func:`warmup_cosine`), accuracy every ``eval_every`` epochs. ``epochs=None``:
    the method's official count."""

    lr: float = 0.002
    weight_decay: float = 5e-4
    batch_size: int = 32
    epochs: int | None = None
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    eval_every: int = 10

    def schedule_checks(self) -> dict[str, bool]:
        """Each shared field's validity, for the method's own ``reject_invalid``."""
        return {
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "epochs": self.epochs is None or self.epochs >= 1,
            "warmup_epochs": self.warmup_epochs >= 0,
            "warmup_lr": math.isfinite(self.warmup_lr) and self.warmup_lr > 0,
            "eval_every": self.eval_every >= 1,
        }


def warmup_cosine(epoch: int, epochs: int, lr: float, warmup_epochs: int = 1, warmup_lr: float = 1e-5) -> float:
    """Learning rate of ``epoch`` (0-based): ``warmup_lr`` for the warm-up epochs, then cosine.

    As Dassl's ``ConstantWarmupScheduler`` over ``CosineAnnealingLR(T_max=epochs)`` with the
    count restarted after warm-up: the first epoch after warm-up runs at ``lr``.
    """
    if epoch < warmup_epochs:
        return warmup_lr
    return 0.5 * lr * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / epochs))


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Mini-batches per epoch: the last partial batch is dropped, as Dassl's training loader does
    (a training set smaller than one batch is one batch)."""
    return max(1, n_train // batch_size)
