"""One craft process per results folder and per study storage: a second is refused naming the first (issue 23, point 5)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.errors import UserError
from benchmark.locks import hold
from benchmark.results.store import LOCK_NAME, cell_status, lock_results

REPO = Path(__file__).resolve().parent.parent
HOLD = "import sys, time; from benchmark.locks import hold\nwith hold(sys.argv[1], 'x'):\n    print('held', flush=True); time.sleep(60)"


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CRAFT_BENCH_CACHE": str(cache)}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the first process ended ({proc.returncode}) before taking its lock"
        assert time.monotonic() < end, f"no {path} after {timeout} s"
        time.sleep(0.2)


def test_a_held_lock_refuses_another_process_naming_host_and_pid(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    with hold(str(lock), "results folder r"):
        with hold(str(lock), "results folder r"):  # re-entrant in one process
            pass
        assert lock.exists()
        other = subprocess.run([sys.executable, "-c", f"from benchmark.locks import hold\nwith hold({str(lock)!r}, 'results folder r'):\n    pass"],
                               capture_output=True, text=True, env=_env(tmp_path), cwd=REPO)
        assert other.returncode == 1
        last = other.stderr.strip().splitlines()[-1]
        assert last.startswith("benchmark.errors.UserError: results folder r is in use by ")
        assert f"(pid {os.getpid()} on host {socket.gethostname()}, since " in last
    assert not lock.exists()


def test_a_lock_whose_holder_was_killed_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True,
                              env=_env(tmp_path), cwd=REPO)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UserError, match=f"pid {holder.pid} on host"):
        with hold(str(lock), "x"):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert lock.exists()  # left behind by the killed process: stale
    with hold(str(lock), "x"):
        assert f'"pid": {os.getpid()}' in lock.read_text()


def test_the_results_lock_leaves_no_folder_it_made_empty(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with lock_results(str(out)):
        assert (out / LOCK_NAME).is_file()
    assert not (tmp_path / "a").exists()
    with lock_results(f"file://{tmp_path}/uri"):  # a URI: no lock
        pass


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from benchmark.datasets.builtin import ensure_builtin_suite

    root = tmp_path_factory.mktemp("cache")
    ensure_builtin_suite(root / "builtin")
    return root


@pytest.mark.slow  # two whole commands on Ray, 35-40 s
def test_two_craft_bench_on_one_folder_compute_each_cell_once(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "out"
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(out), "datasets": ["digits_rotate", "digits_shift"], "methods": ["zero_shot_clip"], "shots": [2],
        "seeds": [1], "backbones": ["craft-tiny:builtin"]}))
    cmd = [sys.executable, "-m", "benchmark.cli", "bench", str(config), "--num-cpus", "1", "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache), cwd=tmp_path)
    try:
        _wait_for(out / LOCK_NAME, first)
        second = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), cwd=tmp_path, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"craft bench: error: results folder {out} is in use by craft bench (pid {first.pid}" in second.stderr
        assert f"(pid {first.pid} on host {socket.gethostname()}" in second.stderr
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr
    assert "2 cells done" in stdout
    assert len(cell_status(str(out))) == 2 and len(list(out.rglob("*.parquet"))) == 2
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow  # two whole commands on Ray, 35-40 s
def test_two_craft_tune_on_one_storage_the_second_is_refused_and_the_first_finishes(tmp_path: Path, cache: Path) -> None:
    out = tmp_path / "tune"
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "methods": ["bbt"], "datasets": ["digits_rotate"], "shots": [2], "backbones": ["craft-tiny:builtin"],
        "out": str(out), "hparams": {"bbt": {"*": {"budget": 80, "popsize": 20, "intrinsic_dim": 16}}},
        "trials": 2, "max_concurrent_trials": 1, "pruning": False, "warm_start": False}))
    cmd = [sys.executable, "-m", "benchmark.cli", "tune", str(config), "--search-only", "--num-cpus", "1", "--no-progress"]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(cache), cwd=tmp_path)
    try:
        _wait_for(out / ".optuna.journal.craft-lock", first)
        second = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), cwd=tmp_path, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"craft tune: error: Optuna storage {out / 'optuna.journal'} is in use by " in second.stderr
        assert f"(pid {first.pid} on host" in second.stderr and "Traceback" not in second.stderr
        stdout, stderr = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert "2/2 trials finished" in stdout and "failed this run" not in stdout
