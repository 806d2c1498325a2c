"""measurement/pack_ray.py: Ray's wheel repacked for the GPU device, executables kept executable."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path



def _pack_ray():
    from measurement import pack_ray

    return pack_ray


def test_pack_keeps_core_and_file_modes_and_leaves_out_the_jar_and_libraries(tmp_path):
    wheel = tmp_path / "ray-0-cp312-cp312-linux_x86_64.whl"
    files = {"ray/__init__.py": (b"x = 1\n", 0o644), "ray/core/src/ray/raylet/raylet": (b"\x7fELF", 0o755),
             "ray/jars/ray_dist.jar": (b"jar", 0o644), "ray/rllib/__init__.py": (b"", 0o644),
             "ray/dashboard/client/build/index.html": (b"<html>", 0o644), "ray/dashboard/agent.py": (b"", 0o644)}
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, (data, mode) in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100000 | mode) << 16
            zf.writestr(info, data)
    out = tmp_path / "ray-core.tar.xz"
    assert _pack_ray().pack(str(wheel), str(out)) == (3, 3)
    with tarfile.open(out) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) == {"ray/__init__.py", "ray/core/src/ray/raylet/raylet", "ray/dashboard/agent.py"}
        assert members["ray/core/src/ray/raylet/raylet"].mode == 0o755 and members["ray/__init__.py"].mode == 0o644
        assert tf.extractfile("ray/__init__.py").read() == b"x = 1\n"
