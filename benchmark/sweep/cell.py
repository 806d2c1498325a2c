"""A cell: one run of one method on one dataset, shots, seed, backbone and hyperparameters."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from craft.budget import default_budget
from craft.methods import make_config


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

    @property
    def cell_id(self) -> str:
        d = asdict(self)
        d.pop("root")
        d["hparams"] = self.full_hparams()
        d["eval_datasets"] = list(self.eval_datasets)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def full_hparams(self) -> dict[str, Any]:
        """The method's whole config (defaults filled in), so that a changed default is a new cell."""
        return asdict(make_config(self.method, self.hparams, f"cell {self.method}/{self.dataset}"))

    def budget(self) -> int:
        """The query budget: the config's, else by shots as in the official scripts; 0 for zero-shot."""
        if self.method == "zero_shot_clip":
            return 0
        return int(self.full_hparams().get("budget") or default_budget(self.shots, self.dataset))

    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.shots}shot/seed{self.seed}/{self.backbone}"
