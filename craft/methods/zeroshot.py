"""Zero-shot CLIP: the dataset's hand-written template, nothing learned, no budget used."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from craft.blackbox import BlackBox
from craft.methods.base import MethodTraits, RunResult, Task, Timer, evaluate


@dataclass
class ZeroShotConfig:
    """Zero-shot CLIP has no hyperparameters."""


class ZeroShot(MethodTraits):
    name = "zero_shot_clip"
    config_cls = ZeroShotConfig
    learns = False

    def run(self, box: BlackBox, task: Task, config: ZeroShotConfig, seed: int) -> RunResult:
        timer = Timer()
        metrics = evaluate(box, task, None)
        trace = [{"generation": 0, "queries": 0, **metrics}]
        return RunResult(self.name, asdict(config), metrics, box.usage.as_dict(), trace, wall_s=timer())
