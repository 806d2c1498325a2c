"""Shared fixtures; tests run from the repository root (``python -m pytest``)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread: on a small shared CPU, tiny ops with two threads wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server():
    """An in-process model server on the shipped tiny model, without a feature cache; one torch
    thread, as the sweep's workers (two threads on a busy 2-core machine crawl)."""
    from benchmark.serve.server import ModelServer

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ModelServer("craft-tiny", "builtin", cache_dir="")
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def builtin_cache(tmp_path_factory: pytest.TempPathFactory):
    """A feature-cache folder holding the generated built-in suite, set as ``CRAFT_BENCH_CACHE`` for the module."""
    from benchmark.datasets.builtin import ensure_builtin_suite

    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("CRAFT_BENCH_CACHE", str(root))
    ensure_builtin_suite(root / "builtin")
    yield root
    mp.undo()
