"""How a sweep's model servers serve: one frozen :class:`ServerOptions`, read once from a config.

Every option travels whole, from the config (``craft bench``, ``craft demo``, ``craft tune``)
through the server pool to each server and its engine. A new option is a field here (with its
config key's help and check) and a keyword of :class:`benchmark.model.engine.ClipEngine` where the
engine uses it: nothing in between changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from benchmark.errors import UserError, show

DEFAULT_RUNS_PER_SERVER = 4
RUNS_PER_SERVER_LIMIT = 2**30  # a server's max_concurrency, 2 x runs_per_server + 2, is an int32 in Ray

# config key -> its help; every key is a field of ServerOptions
KEYS = {
    "runs_per_server": "runs served at once by one model server",
    "precision": "model servers' precision on a GPU: auto (bf16, CBBT fp32; the default), bf16 or fp32 for all "
                 "(CPUs: fp32; protocol official: fp32)",
    "colocate": "true: CraFT and BBT runs execute in their model server's process, logits on its GPU (default false)",
    "attention": "the kernel the servers' text attention is held to: auto (torch's choice, default), math, efficient, "
                 "cudnn or flash",
    "compile": "true (or a torch.compile mode, e.g. reduce-overhead: CUDA graphs on a GPU): model servers run the text "
               "tower under torch.compile, one graph each, compiled in its first query (default false)",
    "max_sequences": "text sequences per forward pass of a server (default: sized by the device's memory); "
                     "lower it where another process shares the GPU",
    "batching": "true: a server merges concurrent runs' queries into one pass; false: each query its own pass, so a "
                "run's rounding never depends on what ran beside it (default null: on a GPU only)",
}
ENGINE_FIELDS = ("compile", "attention", "max_sequences")  # passed to ClipEngine as they are; precision is resolved per method


@dataclass(frozen=True)
class ServerOptions:
    """The serving side of a sweep, one field per config key (:data:`KEYS`)."""

    runs_per_server: int = DEFAULT_RUNS_PER_SERVER
    precision: str = "auto"
    colocate: bool = False
    attention: str = "auto"
    compile: bool | str = False
    max_sequences: int | None = None
    batching: bool | None = None

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str, default_precision: str = "auto") -> ServerOptions:
        """The options a config's keys give (each checked: one sentence naming ``where`` and the key)."""
        check_keys(raw, where)
        given = {k: raw[k] for k in KEYS if k in raw}
        return cls(**{"precision": default_precision, **given})

    def precision_for(self, needs_fp32: bool, gpu: bool) -> str:
        """What a server computes in: fp32 on CPUs; on GPUs ``precision``, where ``auto`` is bf16
        except for methods that need fp32 (:attr:`craft.methods.base.Method.needs_fp32`)."""
        if not gpu:
            return "fp32"
        if self.precision == "auto":
            return "fp32" if needs_fp32 else "bf16"
        return self.precision

    def engine_kwargs(self, precision: str) -> dict[str, Any]:
        """Keyword arguments of :class:`~benchmark.model.engine.ClipEngine` for a server computing in ``precision``."""
        return {"precision": precision, **{k: getattr(self, k) for k in ENGINE_FIELDS}}

    def replace(self, **changes: Any) -> ServerOptions:
        return dataclasses.replace(self, **changes)


def check_keys(raw: Mapping[str, Any], where: str) -> None:
    """UserError naming ``where`` and the key for the first server key whose value cannot be served."""
    if "runs_per_server" in raw:
        v = raw["runs_per_server"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < RUNS_PER_SERVER_LIMIT:
            raise UserError(f"{where}: runs_per_server must be an integer >= 1 and < {RUNS_PER_SERVER_LIMIT:,} "
                            f"(a server takes 2 x runs_per_server + 2 calls at once, an int32 in Ray), got {show(v)}")
    if "precision" in raw:
        from benchmark.model.engine import PRECISIONS

        if raw["precision"] not in PRECISIONS:
            raise UserError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {show(raw['precision'])}")
    if "colocate" in raw and not isinstance(raw["colocate"], bool):
        raise UserError(f"{where}: colocate must be true or false, got {show(raw['colocate'])}")
    if "compile" in raw and not isinstance(raw["compile"], bool):
        _check_compile_mode(raw["compile"], where)
    if raw.get("max_sequences") is not None:
        v = raw["max_sequences"]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < 2**31:
            raise UserError(f"{where}: max_sequences must be an integer >= 1 (or null: sized by memory), got {show(v)}")
    if raw.get("batching") is not None and not isinstance(raw["batching"], bool):
        raise UserError(f"{where}: batching must be true, false or null (on a GPU only), got {show(raw['batching'])}")
    if "attention" in raw:
        from benchmark.model.engine import ATTENTION_KERNELS

        if raw["attention"] not in ATTENTION_KERNELS:
            raise UserError(f"{where}: attention must be one of {', '.join(ATTENTION_KERNELS)}, got {show(raw['attention'])}")


def _check_compile_mode(value: Any, where: str) -> None:
    from benchmark.model.engine import uses_cuda_graphs

    if isinstance(value, str) and value:  # "" would pass as false
        try:
            uses_cuda_graphs(value)
            return
        except RuntimeError:  # a mode torch does not know
            pass
    raise UserError(f"{where}: compile must be true, false or a torch.compile mode (default, reduce-overhead, "
                    f"max-autotune, max-autotune-no-cudagraphs), got {show(value)}")
