"""The methods by name. Each is run as ``METHOD.run(box, task, config, seed)``; BBT and CraFT also
as ``METHOD.steps(...)``, a generator that :mod:`craft.interleave` steps beside other runs."""

from __future__ import annotations

from typing import Any

from craft.methods.base import Method, RunResult, Task, method_config_from_dict
from craft.methods.blackvip import BlackVIP, BlackVIPConfig
from craft.methods.bptvlm import BPTVLM, BPTVLMConfig
from craft.methods.cbbt import CBBT, CBBTConfig
from craft.methods.collaborative import BBT, BBTConfig, CraFT, CraFTConfig
from craft.methods.lfa import LFA, LFAConfig
from craft.methods.whitebox import CoOp, CoOpConfig
from craft.methods.zeroshot import ZeroShot, ZeroShotConfig

# ``coop`` is a white-box reference (``runs_on = SERVER``): the cell runner trains it on the server.
# BPT-VLM, BlackVIP and LFA use the black box's image-side capabilities (craft.blackbox.VisualPrompt).
METHODS: dict[str, Method] = {
    m.name: m for m in (ZeroShot(), BBT(), CraFT(), CBBT(), CoOp(), BPTVLM(), BlackVIP(), LFA())
}


def get_method(name: str) -> Method:
    """The method called ``name``; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def make_config(name: str, hparams: dict[str, Any] | None = None, where: str = "") -> Any:
    """The config of method ``name`` from a dict, unknown keys rejected."""
    return method_config_from_dict(get_method(name).config_cls, hparams, where or f"method {name}")


__all__ = [
    "METHODS", "Method", "RunResult", "Task", "get_method", "make_config",
    "BBTConfig", "BPTVLMConfig", "BlackVIPConfig", "CBBTConfig", "LFAConfig", "CoOpConfig", "CraFTConfig", "ZeroShotConfig",
]
