"""A cell: one run of one method on one dataset, shots, seed, backbone and hyperparameters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmark.datasets.registry import get_spec
from benchmark.sweep.protocol import HARNESS, protocol_train_aug
from craft.budget import default_budget
from craft.methods import get_method, make_config
from craft.methods.base import SERVER


@dataclass(frozen=True)
class Cell:
    """Everything that defines a run. ``cell_id`` hashes all of it except where the data lives."""

    method: str
    dataset: str
    shots: int
    seed: int
    backbone: str
    weights: str
    hparams: dict[str, Any] = field(default_factory=dict, hash=False)
    eval_datasets: tuple[str, ...] = ()
    root: str | None = field(default=None, compare=False)
    protocol: str = HARNESS  # benchmark.sweep.protocol; its method hparams are already in ``hparams``

    @property
    def train_aug(self) -> str | None:
        """The training augmentation in place of the dataset's own (None: the dataset's)."""
        return protocol_train_aug(self.protocol, self.dataset, self.method)

    @property
    def cell_id(self) -> str:
        d = asdict(self)
        d.pop("root")
        if self.protocol == HARNESS:  # ids from before protocols existed stay as they were
            d.pop("protocol")
        if self.train_aug is not None:
            d["train_aug"] = self.train_aug
        d["hparams"] = self.full_hparams()
        d["eval_datasets"] = list(self.eval_datasets)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def full_hparams(self) -> dict[str, Any]:
        """The method's whole config (defaults filled in), so that a changed default is a new cell."""
        return asdict(make_config(self.method, self.hparams, f"cell {self.method}/{self.dataset}"))

    def budget(self) -> int:
        """The query budget: the config's, else the method's default; 0 for zero-shot and white-box runs.

        The default is by shots as in the official CraFT scripts, except for methods with a
        ``default_budget`` of their own (CBBT: the query cost of its official schedule, which
        depends on the number of training images, ``shots x classes``, and on ImageNet on the backbone).
        """
        method = get_method(self.method)
        if not method.learns or method.runs_on == SERVER:
            return 0
        config = make_config(self.method, self.hparams, f"cell {self.method}/{self.dataset}")
        if getattr(config, "budget", None) is not None:  # an explicit value, 0 included, is never the default
            return int(config.budget)
        if hasattr(method, "default_budget"):
            return int(method.default_budget(config, self.shots * get_spec(self.dataset).classes, self.dataset, self.backbone))
        return default_budget(self.shots, self.dataset)

    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.shots}shot/seed{self.seed}/{self.backbone}"
