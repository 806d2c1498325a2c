"""Issue 23, points 8 and 9: a local runtime listens on loopback only, and a killed driver leaves none of it behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def _session_of(driver: int) -> str | None:
    """The session folder of the raylet the driver started, once there is one."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().decode("utf-8", "replace")
        except OSError:
            continue
        if int(stat[1]) == driver and "raylet/raylet" in cmd:
            found = re.search(r"(/[^\0\s=]*/session_[0-9_-]+)", cmd)
            return found.group(1) if found else None
    return None


def _listening_beyond_loopback(pids: list[int]) -> list[str]:
    """``pid address:port`` of every listening TCP socket of ``pids`` bound to anything but loopback."""
    listening = {}  # socket inode -> local address, for LISTEN sockets (state 0A)
    for table, loopback in (("/proc/net/tcp", {"0100007F"}), ("/proc/net/tcp6", {"00000000000000000000000001000000", "0000000000000000FFFF00000100007F"})):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and address not in loopback:
                listening[fields[9]] = f"{address}:{int(port, 16)}"
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        found += [f"{pid} {listening[link[8:-1]]}" for link in links
                  if link.startswith("socket:[") and link[8:-1] in listening]
    return found


@pytest.mark.slow  # a real sweep killed mid-run, then a wait for its runtime to go
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_sigkilled_driver_leaves_no_ray_process_behind(tmp_path: Path) -> None:
    import ray

    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.serve.ray_reaper import holders

    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    config = tmp_path / "s.yaml"
    config.write_text(yaml.safe_dump({
        "out": str(tmp_path / "out"), "methods": ["bbt"], "datasets": ["digits_noise"], "shots": [2],
        "seeds": [1, 2, 3, 4], "backbones": ["craft-tiny:builtin"],
        "hparams": {"bbt": {"*": {"budget": 8000, "intrinsic_dim": 16}}}}))
    ray_dir = os.path.dirname(os.path.abspath(ray.__file__))
    driver = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "bench", str(config), "--num-cpus", "1", "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO), "CRAFT_BENCH_CACHE": str(tmp_path / "cache")})
    session = None
    try:
        end = time.monotonic() + 240
        while True:  # until the runtime runs cells: its agents are up
            assert driver.poll() is None and time.monotonic() < end, "the sweep ended or never started its runs"
            session = session or _session_of(driver.pid)
            if session and any("_run_cell_task" in open(f"/proc/{p}/cmdline").read()
                               for p in holders(session, ray_dir) if os.path.exists(f"/proc/{p}")):
                break
            time.sleep(1)
        before = holders(session, ray_dir)
        titles = {open(f"/proc/{p}/cmdline").read().split("\0")[0] for p in before if os.path.exists(f"/proc/{p}")}
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= titles, titles
        exposed = _listening_beyond_loopback(before + [driver.pid])
        assert exposed == [], f"a local runtime listens beyond loopback: {exposed}"
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        killed = time.monotonic()
        while holders(session, ray_dir) and time.monotonic() - killed < 30:
            time.sleep(0.5)
        left = holders(session, ray_dir)
        print(f"{len(before)} Ray processes before the kill; none left {time.monotonic() - killed:.1f} s after it")
        assert left == [], [open(f"/proc/{p}/cmdline").read()[:80] for p in left if os.path.exists(f"/proc/{p}")]
    finally:
        if driver.poll() is None:
            driver.kill()
        if session:  # whatever a failed assertion left: this test's runtime only
            from benchmark.serve.ray_reaper import end as end_runtime

            end_runtime(session, ray_dir)
