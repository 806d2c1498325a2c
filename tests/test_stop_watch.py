"""A craft process whose main thread is stuck where Ctrl-C cannot reach it still stops: a second Ctrl-C
ends it at once, and one Ctrl-C within the grace period, with every thread's stack (benchmark.stop_watch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A subcommand whose main thread never gives Ctrl-C back, as a native wait or a library that
# swallows KeyboardInterrupt would.
STUCK = '''
import time
def add_arguments(parser): pass
def run(args):
    from benchmark.stop_watch import say_on_forced_exit
    say_on_forced_exit("resume with: craft stuck", lambda: "1 trial marked")
    print("ready", flush=True)
    while True:
        try:
            time.sleep(1000)
        except KeyboardInterrupt:
            pass
'''


def _start(tmp_path: Path, grace: float) -> subprocess.Popen:
    (tmp_path / "stuck_cmd.py").write_text(STUCK)
    code = ("import sys; import benchmark.cli as c; import benchmark.stop_watch as w; "
            f"w.GRACE_S = {grace}; c.SUBCOMMANDS['stuck'] = ('stuck_cmd', 'stuck'); sys.argv = ['craft', 'stuck']; "
            "sys.exit(c.main())")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path)])})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # into its loop
    return proc


def test_a_second_ctrl_c_ends_a_stuck_command_at_once(tmp_path: Path) -> None:
    proc = _start(tmp_path, grace=60)
    try:
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first one is the main thread's to answer
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and time.monotonic() - sent < 5
    assert "craft stuck: a second signal: stopping now" in stderr and "craft stuck: resume with: craft stuck" in stderr


def test_one_ctrl_c_ends_a_stuck_command_after_the_grace_period_naming_where_it_was(tmp_path: Path) -> None:
    proc = _start(tmp_path, grace=1.0)
    try:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "did not stop within 1 s of the signal; where each thread was:" in stderr
    assert "stuck_cmd.py" in stderr and "craft-stop-watch" not in stderr.split("where each thread was:")[0]
    assert stderr.rstrip().endswith("craft stuck: 1 trial marked\ncraft stuck: resume with: craft stuck")
