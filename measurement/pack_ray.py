"""Repack Ray's wheel as an xz tarball of what ``craft perf --server-runs`` needs, for the GPU device.

The device image has no Ray, and Ray's wheel (79 MB) is more than a device call carries (64 MiB
with the working tree). Left out: the Java jar, the dashboard's web client and the libraries
that are not Ray core (RLlib, Data, Serve, LLM, Train, Tune, AIR, workflows). File modes are kept (the raylet
and GCS binaries must stay executable). Extract it into a folder on ``PYTHONPATH``:
``tar -xJf ray-core.tar.xz -C site``.

    python measurement/pack_ray.py ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl .whl/ray-core.tar.xz
"""

from __future__ import annotations

import argparse
import lzma
import tarfile
import zipfile

DROP = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/data/", "ray/serve/", "ray/llm/",
        "ray/train/", "ray/tune/", "ray/air/", "ray/workflow/")


def pack(wheel: str, out: str) -> tuple[int, int]:
    """Write the tarball; return (files kept, files dropped)."""
    kept = dropped = 0
    with zipfile.ZipFile(wheel) as zf, tarfile.open(out, "w:xz", preset=6 | lzma.PRESET_EXTREME) as tf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if info.filename.startswith(DROP):
                dropped += 1
                continue
            member = tarfile.TarInfo(info.filename)
            member.size = info.file_size
            member.mode = (info.external_attr >> 16) & 0o7777 or 0o644
            with zf.open(info) as src:
                tf.addfile(member, src)
            kept += 1
    return kept, dropped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wheel")
    p.add_argument("out")
    args = p.parse_args()
    kept, dropped = pack(args.wheel, args.out)
    print(f"{args.out}: {kept} files kept, {dropped} left out")


if __name__ == "__main__":
    main()
