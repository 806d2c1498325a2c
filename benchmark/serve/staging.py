"""Weights staged from the driver to the model servers, through Ray's object store.

The driver has resolved each backbone's weights to one local file (:func:`benchmark.model.weights.resolve`).
It puts the file's bytes in the object store once (:func:`stage`); a server on another node fetches
them only if its node lacks the file, writes them to ``$CRAFT_BENCH_CACHE/weights/staged/<sha256><suffix>``,
checks the digest, and loads from there (:func:`local_file`). A server on the driver's node loads the
driver's own file. So an autoscaled GPU node needs no internet, no shared filesystem and no manual
step; the object store moves each file once per node and the copy is kept for the next sweep.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from benchmark.errors import UserError
from benchmark.files import file_sha256
from benchmark.model.weights import WeightsFile, staged_path


@dataclass(frozen=True)
class StagedWeights:
    """A driver's weights file and where a server finds it: the driver's node, and the object with its bytes."""

    file: WeightsFile
    driver_node: str
    ref: Any  # ray.ObjectRef of the file's bytes


def stage(files: dict[tuple[str, str], WeightsFile | None]) -> dict[tuple[str, str], StagedWeights]:
    """Put each resolved file's bytes in Ray's object store (driver side, Ray started); None entries
    (built-in or random weights) need nothing."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    staged = {}
    for key, f in files.items():
        if f is None:
            continue
        with open(f.path, "rb") as fh:
            staged[key] = StagedWeights(f, node, ray.put(fh.read()))
    return staged


def local_file(staged: StagedWeights) -> str:
    """The staged file on this node (server side): the driver's where it is here and whole, else this
    node's copy named by digest, fetched from the object store the first time."""
    import ray

    f = staged.file
    here = ray.get_runtime_context().get_node_id()
    if os.path.isfile(f.path) and os.path.getsize(f.path) == f.size and here == staged.driver_node:
        return f.path
    local = staged_path(f.sha256, f.suffix)
    if local.is_file() and local.stat().st_size == f.size:
        return str(local)
    data = ray.get(staged.ref)
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if file_sha256(tmp) != f.sha256:
            raise UserError(f"the staged weights of {f.backbone}:{f.weights} arrived damaged (sha256 differs)")
        os.replace(tmp, local)
    finally:
        tmp.unlink(missing_ok=True)
    return str(local)
