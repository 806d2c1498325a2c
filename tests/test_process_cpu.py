"""``measurement.process_cpu`` counts the CPU of processes a command starts but does not wait for (Ray's)."""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_detached_grandchilds_cpu_is_counted_under_its_own_title(capsys: pytest.CaptureFixture[str]) -> None:
    from measurement.process_cpu import main

    spin = "import time; t = time.process_time()\nwhile time.process_time() - t < 0.6: pass\ntime.sleep(0.6)"
    # The child starts a grandchild in its own session and exits at once; the grandchild spins 0.6 s of CPU.
    launcher = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {spin!r}], start_new_session=True)"
    main(["--every", "0.1", "--", sys.executable, "-c", launcher + "; import time; time.sleep(1.0)"])
    out = capsys.readouterr().out
    head, *rows = [line for line in out.splitlines() if line.strip()]
    assert "exit 0" in head and "CPU s in" in head
    spun = [float(r.split()[0]) for r in rows if "process_time" in r]
    assert spun and 0.4 <= max(spun) <= 1.5, out
