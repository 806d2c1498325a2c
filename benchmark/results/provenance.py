"""Where a result came from: the code version and the versions of the packages that matter."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("craft-bench", "torch", "open_clip_torch", "ray", "cma", "optuna", "pyarrow", "numpy")


# Set by a sweep's driver (where the checkout's .git is) for its workers, which may run from a copy without it.
CODE_VERSION_ENV = "CRAFT_CODE_VERSION"


@lru_cache(maxsize=1)
def code_version() -> str:
    """The driver's code version when it passed one (:data:`CODE_VERSION_ENV`), else ``git describe`` of
    the checkout (``-dirty`` when modified), else the package version."""
    if os.environ.get(CODE_VERSION_ENV):
        return os.environ[CODE_VERSION_ENV]
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=here, capture_output=True, text=True, timeout=10, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return _version("craft-bench") or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    return {name: v for name in PACKAGES if (v := _version(name))}


@lru_cache(maxsize=1)
def runtime_versions() -> dict[str, str | None]:
    """The schema's version columns: Python's, torch's and open_clip's (None where not installed)."""
    return {"python_version": platform.python_version(), "torch_version": _version("torch"),
            "open_clip_version": _version("open_clip_torch")}
