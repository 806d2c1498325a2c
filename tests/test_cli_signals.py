"""Signals a ``craft`` command answers: SIGUSR2 prints every thread's stack and goes on; Ctrl-C exits 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SLEEPER = '''
import sys, time
def add_arguments(parser): pass
def run(args):
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
'''


def test_sigusr2_dumps_stacks_then_ctrl_c_exits_130(tmp_path: Path) -> None:
    (tmp_path / "sleeper_cmd.py").write_text(SLEEPER)
    code = "import sys; from benchmark.cli import run_command; sys.exit(run_command('sleep', 'sleeper_cmd', 'sleeps', []))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGUSR2)
        time.sleep(0.5)
        assert proc.poll() is None, "SIGUSR2 must not stop the command"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "most recent call first" in stderr and "sleeper_cmd.py" in stderr  # where the main thread was
    assert stderr.rstrip().endswith("interrupted")
