"""A run's generations read nothing back from its device except through ``craft.transfer.HostCopy``.

On a GPU every read of a device tensor's value on the host (``int(t)``, ``.item()``, ``.tolist()``,
``.cpu()``, a boolean mask's ``nonzero``) waits until the GPU has finished everything queued: the
work of every run interleaved with this one (craft.interleave). ``tests/test_gpu.py`` checks this
with CUDA's sync debug mode, on a GPU only. Here the same is checked on the CPU, where all tensors
are on the host: every such read is recorded, with the frames of the repository that made it, and
the only tensors that may be read are those a ``HostCopy`` handed out. Two kinds of read are seen:
operations that put a tensor's values into the host (a dispatch mode sees them) and the tensor
methods that on a CPU dispatch nothing (``tolist``, ``numpy``, ``cpu``; wrapped for the test).
Copies into a GPU from pageable memory are not visible here; the GPU test covers them.
"""

from __future__ import annotations

import traceback
import weakref
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import craft.transfer
from benchmark.model.engine import ClipEngine, EngineBackend
from benchmark.model.loading import load_model
from measurement.loops import Shapes, synthetic_task
from craft.blackbox import MeteredBlackBox
from measurement.interleaved import run_interleaved
from craft.methods import get_method, make_config

# Operations whose output depends on a tensor's values in host memory: on CUDA each synchronises.
HOST_READS = {"_local_scalar_dense", "nonzero", "masked_select", "_unique2", "unique_dim", "unique_consecutive",
              "repeat_interleave", "is_nonzero", "equal"}
# Tensor methods that read values into the host and dispatch nothing on a CPU tensor.
READ_METHODS = ("tolist", "numpy", "cpu")
ROOT = Path(__file__).resolve().parents[1]


class HostReads(TorchDispatchMode):
    """Records each host read of a tensor that no HostCopy handed out, with the repository frames that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[str]]] = []
        self.copied: dict[int, weakref.ref] = {}  # what HostCopy.get returned, by id

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._overloadpacket.__name__
        bool_index = name == "index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ()) if i is not None
        )
        if name in HOST_READS or bool_index:
            self.check(name, args[0] if args else None)
        return func(*args, **(kwargs or {}))

    def check(self, what: str, tensor: torch.Tensor | None) -> None:
        if tensor is not None and (ref := self.copied.get(id(tensor))) is not None and ref() is tensor:
            return
        stack = traceback.extract_stack()[:-2]
        # A CPU's Adam keeps its step count on the host (the GPU's fused Adam on the device).
        if any("torch/optim/" in f.filename for f in stack):
            return
        ours = [f"{Path(f.filename).relative_to(ROOT).as_posix()}:{f.name}" for f in stack
                if Path(f.filename).is_relative_to(ROOT) and not f.filename.endswith("test_host_reads.py")]
        self.found.append((what, ours[-4:]))

    @contextmanager
    def watching(self):
        """The dispatch mode, HostCopy.get's results marked as readable, and the read methods wrapped."""
        get, originals = craft.transfer.HostCopy.get, {m: getattr(torch.Tensor, m) for m in READ_METHODS}

        def marked_get(copy):
            out = get(copy)
            self.copied[id(out)] = weakref.ref(out)
            return out

        def wrap(method: str):
            original = originals[method]

            def read(t, *args, **kwargs):
                self.check(method, t)
                return original(t, *args, **kwargs)

            return read

        craft.transfer.HostCopy.get = marked_get
        for m in READ_METHODS:
            setattr(torch.Tensor, m, wrap(m))
        try:
            with self:
                yield self
        finally:
            craft.transfer.HostCopy.get = get
            for m, f in originals.items():
                setattr(torch.Tensor, m, f)


@pytest.fixture(scope="module")
def engine():
    return ClipEngine(load_model("craft-tiny", "builtin", "cpu"), "cpu")


def _steps(engine: ClipEngine, method: str, seed: int):
    names = [f"class {i}" for i in range(10)]
    data, task = synthetic_task(engine, Shapes("reads", classes=10, train=160, val=40, test=100), names, seed=0)
    task.class_subsets = {"test": [0, 2, 4, 6, 8]}  # scored in a label subspace, as ImageNet-A/R
    # Logits handed out on the engine's device, as to a colocated run on a GPU server; its queries
    # merged into one pass, as on a GPU.
    box = MeteredBlackBox(EngineBackend(engine, data, engine.device, merge_queries=True), 10_000)
    values = {"popsize": 8, "intrinsic_dim": 16, "budget": 8 * 4, "eval_every": 2}
    return get_method(method).steps(box, task, make_config(method, values), seed)


def test_interleaved_generations_read_back_only_their_host_copies(engine, one_torch_thread):
    runs = [_steps(engine, "craft", 0), _steps(engine, "craft", 1), _steps(engine, "bbt", 2)]
    for steps in runs:
        next(steps)  # set-up: the class part's length and the prompt's words are read once, before
    reads = HostReads()
    with reads.watching():
        outcomes = run_interleaved(runs)
    assert not any(isinstance(o, BaseException) for o in outcomes), outcomes
    assert reads.found == []


def test_the_probe_finds_reads_of_values_not_copied_by_a_host_copy(engine):
    """The check above could fail: reads of a value no HostCopy handed out are found, with their caller."""
    part = engine.class_part(["a", "bb"])
    reads = HostReads()
    with reads.watching():
        int(part.lengths.max())
        part.lengths.tolist()
        part.lengths.cpu()
        craft.transfer.HostCopy(part.lengths).get().tolist()  # allowed: a HostCopy's result
    assert [name for name, _ in reads.found] == ["_local_scalar_dense", "tolist", "cpu"]
    assert torch.Tensor.tolist(part.lengths) == part.lengths.tolist()  # the methods are restored
