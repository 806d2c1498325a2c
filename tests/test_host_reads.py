"""A run's generations read nothing back from its device except through ``craft.transfer.HostCopy``.

On a GPU every read of a device tensor's value on the host (``int(t)``, ``.item()``, a boolean
mask's ``nonzero``) waits until the GPU has finished everything queued: the work of every run
interleaved with this one (craft.interleave). ``tests/test_gpu.py`` checks this with CUDA's sync
debug mode, on a GPU only. Here the same property is checked on the CPU: a dispatch mode records
every operation that reads a tensor's values into the host (on a GPU, a synchronisation) and where
it was called from; the only callers allowed are those that read a ``HostCopy``'s result.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmark.engine import ClipEngine, EngineBackend
from benchmark.models import load_model
from benchmark.perf_measure import Shapes, synthetic_task
from craft.blackbox import MeteredBlackBox
from craft.interleave import run_interleaved
from craft.methods import get_method, make_config

# Operations whose output depends on a tensor's values in host memory: on CUDA each synchronises.
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
              "repeat_interleave", "is_nonzero", "equal"}
# Where a run reads what a HostCopy brought to the host (losses, fitness, accuracies).
ROOT = Path(__file__).resolve().parents[1]
HOST_COPY_READERS = {("craft/methods/collaborative.py", "_settle"), ("craft/methods/base.py", "_percent")}


class HostReads(TorchDispatchMode):
    """Records each host read outside :data:`HOST_COPY_READERS` with the repository frames that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        bool_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) if i is not None
        )
        if name in HOST_READS or bool_index:
            stack = traceback.extract_stack()
            # A CPU's Adam keeps its step count on the host (the GPU's fused Adam on the device).
            in_optimizer = any("torch/optim/" in f.filename for f in stack)
            ours = [(Path(f.filename).relative_to(ROOT).as_posix(), f.name) for f in stack if Path(f.filename).is_relative_to(ROOT)]
            ours = [f for f in ours if f[0].startswith(("craft/", "benchmark/"))]
            if not in_optimizer and not any(f in HOST_COPY_READERS for f in ours):
                self.found.append((name, [f"{path}:{fn}" for path, fn in ours[-4:]]))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def engine():
    return ClipEngine(load_model("craft-tiny", "builtin", "cpu"), "cpu")


def _steps(engine: ClipEngine, method: str, seed: int):
    names = [f"class {i}" for i in range(10)]
    data, task = synthetic_task(engine, Shapes("reads", classes=10, train=160, val=40, test=100), names, seed=0)
    # Logits handed out on the engine's device, as to a colocated run on a GPU server.
    box = MeteredBlackBox(EngineBackend(engine, data, engine.device), 10_000)
    values = {"popsize": 8, "intrinsic_dim": 16, "budget": 8 * 4, "eval_every": 2}
    return get_method(method).steps(box, task, make_config(method, values), seed)


def test_interleaved_generations_read_back_only_their_host_copies(engine, one_torch_thread):
    runs = [_steps(engine, "craft", 0), _steps(engine, "craft", 1), _steps(engine, "bbt", 2)]
    for steps in runs:
        next(steps)  # set-up: the class part's length and the prompt's words are read once, before
    reads = HostReads()
    with reads:
        outcomes = run_interleaved(runs)
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert reads.found == []


def test_the_probe_finds_a_read_of_a_device_value(engine):
    """The check above could fail: a value read outside a HostCopy reader is found, with its caller."""
    part = engine.class_part(["a", "bb"])
    reads = HostReads()
    with reads:
        int(part.lengths.max())
    assert [name for name, _ in reads.found] == ["_local_scalar_dense"]
