"""Shared fixtures; tests run from the repository root (``python -m pytest``)."""

from __future__ import annotations

import atexit
import os
import sys

import pytest
import torch

# Set to 1 to end the test process with the interpreter's full teardown (see pytest_unconfigure).
FULL_TEARDOWN_ENV = "CRAFT_TEST_FULL_TEARDOWN"
_SESSION = pytest.StashKey[pytest.Session]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SESSION] = session


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End ``python -m pytest`` with pytest's exit status and without the interpreter's teardown.

    The session starts and shuts down Ray in this process several times and leaves daemon threads
    (colocated runs, trackers' exporters) and native state behind; Ray's in-process restarts are known
    to crash on what a previous runtime left (ray-project/ray#31145), and a CI run once died of SIGSEGV
    after every test had passed and the summary was printed. Nothing is left to do by then: the Ray
    runtimes were stopped by their tests, and CMA-ES worker processes end on their closed pipes. Not
    when pytest is called from another program.
    """
    session = config.stash.get(_SESSION, None)
    if session is not None and os.environ.get(FULL_TEARDOWN_ENV) != "1" and _pytest_is_the_program():
        atexit.register(_exit_now, int(session.exitstatus))  # registered last, run first


def _pytest_is_the_program() -> bool:
    """``pytest ...`` or ``python -m pytest ...``, not pytest.main() inside another program."""
    argv0 = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return os.path.basename(argv0).startswith(("pytest", "py.test")) or argv0.endswith(os.path.join("pytest", "__main__.py"))


def _exit_now(status: int) -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os._exit(status)


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
