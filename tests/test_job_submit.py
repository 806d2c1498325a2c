"""``ray job submit --working-dir . -- craft bench ...`` as docs/cluster.md says, on a loopback cluster (issue 21).

A head node (dashboard on 127.0.0.1, token authentication on, no GPU) and one worker node declaring a
GPU, each with its own ``CRAFT_BENCH_CACHE`` and the worker with downloads off (``HF_HUB_OFFLINE=1``).
The sweep's backbone loads from a checkpoint file that only the driver resolved; the model server,
placed on the worker node by its GPU, must get it staged through Ray into the worker's cache. Checked:
the job succeeds; the results lie in the absolute ``--out`` (none in Ray's job directory), every cell
once; ``code_version`` holds this checkout's commit (the driver's, passed to the workers); the
weights arrived in the worker's cache; the driver printed progress lines while a cell ran.
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

from benchmark.files import file_sha256
from benchmark.model.builtin import builtin_model_paths

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
UPLOAD_EXCLUDES = ".venv,venv,__pycache__"  # Ray's default excludes less .git, as docs/cluster.md submits


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def job_cluster(tmp_path: Path):
    """Head (dashboard on loopback) and one GPU-declaring worker node, each its own process group and cache."""
    from benchmark.datasets.builtin import ensure_builtin_suite

    top = Path(tempfile.mkdtemp(prefix="craft-job-", dir="/tmp"))  # short: Ray's socket paths
    port, dash = free_port(), free_port()
    base = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "OMP_NUM_THREADS": "1",
            "RAY_memory_monitor_refresh_ms": "0"}
    for k in ("RAY_ADDRESS", "PYTHONPATH", "CRAFT_ALLOW_DOWNLOAD"):
        base.pop(k, None)
    caches = {"head": tmp_path / "head-cache", "worker": tmp_path / "worker-cache"}
    for c in caches.values():
        ensure_builtin_suite(c / "builtin")
    groups = []

    def start(args: list[str], env: dict[str, str]) -> None:
        proc = subprocess.Popen([RAY, "start", *args, "--disable-usage-stats"], env=env, cwd=top, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        groups.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, out[-3000:]

    try:
        start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
               f"--temp-dir={top}", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
               f"--dashboard-agent-listen-port={free_port()}"],
              {**base, "CRAFT_BENCH_CACHE": str(caches["head"])})
        # Its own temp dir: two nodes on one machine would otherwise unpack the job's working dir in one
        # place, one deleting what the other's driver runs from.
        start([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=1",
               f"--temp-dir={top}/w",
               f"--dashboard-agent-listen-port={free_port()}"],
              {**base, "CRAFT_BENCH_CACHE": str(caches["worker"]), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        yield {"dashboard": f"http://127.0.0.1:{dash}", "env": base, "caches": caches, "dir": top}
    finally:
        for pgid in reversed(groups):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow  # a loopback cluster and a Ray job: about a minute and a half
def test_ray_job_submit_as_the_docs_say(job_cluster, tmp_path: Path) -> None:
    ckpt = tmp_path / "driver-only" / "craft-tiny.safetensors"  # weights only the driver resolves and stages
    ckpt.parent.mkdir()
    shutil.copy(builtin_model_paths()[1], ckpt)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "out": "results/tiny",  # relative: refused inside a job, so --out gives the absolute location
        "datasets": ["digits_rotate"], "methods": ["zero_shot_clip", "craft"], "shots": [2], "seeds": [1],
        "backbones": [f"craft-tiny:{ckpt}"],
        # 240 generations: several of the driver's 2-second drains while the cell runs, even on an idle machine
        "hparams": {"craft": {"*": {"budget": 9600, "intrinsic_dim": 64, "eval_every": 5}}},
        "runs_per_server": 2,
    }))
    out = tmp_path / "shared" / "tiny"
    cmd = [RAY, "job", "submit", "--address", job_cluster["dashboard"], "--working-dir", ".", "--",
           "craft", "bench", str(config), "--out", str(out), "--progress-every", "1"]
    env = {**job_cluster["env"], "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES": UPLOAD_EXCLUDES}  # .git travels
    for _ in range(30):  # a just-started head's job agent takes a few seconds to register
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        log = done.stdout + done.stderr
        if "No available agent to submit job" not in log:
            break
        time.sleep(1)
    assert done.returncode == 0 and "succeeded" in log, log[-4000:]

    files = sorted(out.rglob("*.parquet"))
    assert len(files) == 2 and len({f.name for f in files}) == 2, log[-3000:]  # every cell once
    assert not list(Path(job_cluster["dir"]).rglob("*.parquet")), "results inside Ray's job directory"
    commit = subprocess.run(["git", "describe", "--always", "--abbrev=12"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    for f in files:
        row = pq.read_table(f).to_pylist()[0]
        assert row["status"] == "ok" and row["code_version"].removesuffix("-dirty") == commit, row
    staged = job_cluster["caches"]["worker"] / "weights" / "staged" / f"{file_sha256(ckpt)}.safetensors"
    assert staged.is_file(), "the weights were not staged to the worker node"
    assert "running craft/digits_rotate/2shot/seed1/craft-tiny: generation=" in log, log[-3000:]  # a progress line while the cell ran
