"""Sweeps on a real multi-node Ray cluster on this machine, through faults.

``ray start --head`` on loopback plus two ``ray start --address`` worker nodes, each declaring one
GPU (the model servers run on CPU, as torch sees no GPU), with token authentication on. The
driver is ``craft bench`` in a subprocess. One test SIGKILLs the driver mid-sweep and runs the
same command again; the other kills a worker node (its whole process group: raylet, workers,
its model server) mid-sweep. Every cell must end present exactly once, with no temporary file
left. Each node is started in its own session, so a node is killed, and everything torn down,
by process group; nothing here runs ``ray stop`` (it would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from benchmark.results.store import FAILED_SUFFIX, OK_SUFFIX, TMP_PREFIX, log_path
from benchmark.sweep.config import load_config
from benchmark.sweep.plan import expand

pytestmark = pytest.mark.slow  # a real multi-node cluster through faults: the slow tier

SWEEP = {  # 12 cells of about a second each
    "datasets": ["digits_rotate"],
    "methods": ["zero_shot_clip", "bbt", "craft"],
    "shots": [2],
    "seeds": [1, 2, 3, 4],
    "backbones": ["craft-tiny:builtin"],
    "hparams": {m: {"*": {"budget": 400, "intrinsic_dim": 64}} for m in ("bbt", "craft")},
    "runs_per_server": 2,
}


class LocalCluster:
    """A head node and worker nodes on 127.0.0.1, each node its own process group."""

    def __init__(self, cache: Path) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="craft-ray-", dir="/tmp"))  # short: socket paths
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "CRAFT_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            # Notice a dead node within seconds, not Ray's default half minute.
            "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000",
            # Three "nodes" share this machine's memory, and each node's memory monitor would see
            # all of it (and other jobs) as its own and kill its workers.
            "RAY_memory_monitor_refresh_ms": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.groups: list[int] = []

    def _start(self, args: list[str]) -> int:
        proc = subprocess.Popen(["ray", "start", *args, "--disable-usage-stats"], env=self.env, cwd=self.dir,
                                start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.groups.append(proc.pid)  # the node's daemons keep this process group
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out[-3000:]
        return proc.pid

    def start(self, workers: int) -> None:
        self._start(["--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                     f"--temp-dir={self.dir}", "--include-dashboard=false"])
        # One after another: worker nodes starting at once on two cores can time out.
        self.workers = [
            self._start([f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1"])
            for _ in range(workers)
        ]

    def kill_group(self, pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for pgid in reversed(self.groups):
            self.kill_group(pgid)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    from benchmark.datasets.builtin import ensure_builtin_suite

    cache = tmp_path_factory.mktemp("cache")
    ensure_builtin_suite(cache / "builtin")
    c = LocalCluster(cache)
    try:
        c.start(workers=2)
        yield c
    finally:
        c.stop()


def write_config(folder: Path) -> tuple[Path, Path]:
    out = folder / "out"
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, "out": str(out)}))
    return path, out


def bench(cluster: LocalCluster, config: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "benchmark.cli", "bench", str(config), "--address", cluster.address, "--no-progress"]
    return subprocess.Popen(cmd, env=cluster.env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def result_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name.endswith(OK_SUFFIX) and not p.name.startswith(TMP_PREFIX))


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"driver ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def assert_every_cell_once(config: Path, out: Path) -> None:
    """One ok file per planned cell, holding that cell; no failure record, no temporary, no stray file."""
    cells = {c.cell_id: c for c in expand(load_config(config))}
    files = result_files(out)
    ids = [f.name[: -len(OK_SUFFIX)] for f in files]
    assert sorted(ids) == sorted(cells), "result files are not exactly one per planned cell"
    assert not [f for f in files if f.name.endswith(FAILED_SUFFIX)]
    assert not [p for p in out.rglob(f"{TMP_PREFIX}*")], "temporary files left behind"
    for f in files:
        table = pq.read_table(f)
        assert set(table.column("cell_id").to_pylist()) == {f.name[: -len(OK_SUFFIX)]}
        assert table.column("status").to_pylist() == ["ok"] * table.num_rows
        cell = cells[f.name[: -len(OK_SUFFIX)]]
        assert Path(log_path(str(out), cell.method, cell.dataset, cell.cell_id)).is_file()


def test_driver_killed_mid_sweep_loses_only_cells_in_flight(cluster: LocalCluster, tmp_path: Path) -> None:
    config, out = write_config(tmp_path)
    total = len(expand(load_config(config)))
    first = bench(cluster, config, tmp_path / "first.log")
    try:
        wait_for(lambda: len(result_files(out)) >= 3, 180, "3 cells", first, tmp_path / "first.log")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        cluster.kill_group(first.pid)
    written = len(result_files(out))
    assert written < total, "the sweep finished before the driver was killed; nothing was tested"

    second = bench(cluster, config, tmp_path / "second.log")
    assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    text = (tmp_path / "second.log").read_text()
    assert f"{total - written} cells done, {written} already done" in text, text[-2000:]
    assert_every_cell_once(config, out)


def test_worker_node_killed_mid_sweep_costs_only_its_runs(cluster: LocalCluster, tmp_path: Path) -> None:
    config, out = write_config(tmp_path)
    total = len(expand(load_config(config)))
    log = tmp_path / "driver.log"
    driver = bench(cluster, config, log)
    try:
        wait_for(lambda: len(result_files(out)) >= 3, 180, "3 cells", driver, log)
        cluster.kill_group(cluster.workers[1])  # its raylet, its runs and its model server
        assert len(result_files(out)) < total, "the sweep finished before the node was killed; nothing was tested"
        assert driver.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        cluster.kill_group(driver.pid)
    assert f"{total} cells done, 0 already done" in log.read_text()
    assert_every_cell_once(config, out)
