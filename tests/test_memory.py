"""The one peak-memory measure (benchmark.memory): white-box training, colocated runs, a cell's process, craft perf."""

from __future__ import annotations

import torch

from benchmark.memory import PeakMemory, device_peak_mb, peak_memory, process_peak_rss_mb


def test_peak_memory_sees_an_allocation_inside_the_block():
    with peak_memory(torch.device("cpu"), resident_bytes=2**20) as peak:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        del x
    assert peak.mb is not None and 64 <= peak.mb < 64 + 60, peak
    assert peak.how == "peak RSS growth + weights"


def test_peak_memory_on_cpu_can_report_the_whole_resident_peak():
    """``resident_bytes=None`` (craft perf): everything resident counts, the model's weights included."""
    with peak_memory(torch.device("cpu"), resident_bytes=None) as mem:
        block = torch.ones(64, 2**20 // 4)  # 64 MiB, touched
        block += 1
    assert isinstance(mem, PeakMemory) and mem.mb >= 64 and "RSS" in mem.how
    assert process_peak_rss_mb() >= mem.mb - 1


def test_a_cpu_has_no_device_peak():
    assert device_peak_mb(torch.device("cpu")) is None
