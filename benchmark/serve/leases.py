"""Which model server of its group a run uses, when runs start in other processes (``craft tune``'s trials).

A run leases the least-loaded server of its group for as long as it runs (:class:`ServerLeases`).
A sweep's driver starts every run itself and holds the counts in its own memory
(:mod:`benchmark.sweep.runner`); a search's trials start in Ray Tune's worker processes, so their
counts live in one small actor (:func:`start_leases`). A trial whose process dies while holding a
lease leaves it counted; the others still spread over the servers by their counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from benchmark.serve.pool import ServerKey, ServerPool


class ServerLeases:
    """Runs per server, by :class:`~benchmark.serve.pool.ServerKey`: in a sweep's driver, or as a search's actor."""

    def __init__(self, sizes: dict[ServerKey, int]) -> None:
        self._load = {key: [0] * n for key, n in sizes.items()}

    def acquire(self, key: ServerKey, cap: int | None = None) -> int | None:
        """The index of the least-loaded server of ``key`` (the first of equals), now counted one run
        more; None, and nothing counted, when that server already has ``cap`` runs."""
        load = self._load[key]
        idx = min(range(len(load)), key=load.__getitem__)
        if cap is not None and load[idx] >= cap:
            return None
        load[idx] += 1
        return idx

    def release(self, key: ServerKey, idx: int) -> None:
        load = self._load[key]
        load[idx] = max(0, load[idx] - 1)

    def loads(self) -> dict[ServerKey, list[int]]:
        return {key: list(load) for key, load in self._load.items()}


def start_leases(pool: ServerPool) -> Any:
    """The lease actor of ``pool``'s servers (no CPU reserved: it only counts)."""
    import ray

    return ray.remote(num_cpus=0)(ServerLeases).remote({key: len(group) for key, group in pool.groups.items()})


@contextlib.contextmanager
def leased_server(leases: Any, pool: ServerPool, backbone: str, weights: str, method: str) -> Iterator[Any]:
    """The server a ``method`` run on ``backbone:weights`` uses while in the block: the least-loaded of
    its group by ``leases`` (an actor of :func:`start_leases`, or an in-process :class:`ServerLeases`);
    the first of the group when there is one server or no ``leases``."""
    key = pool.key(backbone, weights, method)
    group = pool.groups[key]
    if leases is None or len(group) == 1:
        yield group[0]
        return
    if isinstance(leases, ServerLeases):
        acquire, release = leases.acquire, leases.release
    else:
        import ray

        acquire = lambda k: ray.get(leases.acquire.remote(k))  # noqa: E731
        release = leases.release.remote
    idx = acquire(key)
    try:
        yield group[idx]
    finally:
        release(key, idx)
