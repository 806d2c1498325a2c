"""Command-line options that ``craft bench`` and ``craft tune`` share: config overrides and where ``out`` may be.

``--set KEY=VALUE`` (any top-level key), ``--out`` and ``--root`` become one mapping laid over the
config file before its one check (:func:`benchmark.config_yaml.parse_overrides`), so a cluster run
needs no edited copy of the YAML. Under ``ray job submit --working-dir .`` the driver's current
directory is Ray's per-job copy of the working directory, deleted with the job: a relative ``out``
would put the results there, so it is refused unless ``--allow-relative-out``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from benchmark.errors import UserError

# Where Ray unpacks a job's --working-dir (under its session folder); a driver whose cwd lies below runs in a job.
RAY_WORKING_DIR_MARK = os.path.join("runtime_resources", "working_dir_files")
RAY_JOB_ENV = ("RAY_JOB_CONFIG_JSON_ENV_VAR", "RAY_JOB_SUBMISSION_ID", "RAY_JOB_ID")


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """``--set``, ``--out``, ``--root`` and ``--allow-relative-out``."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a top-level config key, value read as YAML (repeatable): --set out=s3://bucket/x "
                             "--set seeds=[1,2]; checked as the file's keys are")
    parser.add_argument("--out", default=None, help="results location (same as --set out=...): a folder or a URI")
    parser.add_argument("--root", default=None, help="data root (same as --set root=...)")
    parser.add_argument("--allow-relative-out", action="store_true",
                        help="accept a relative out inside a Ray job (it lands in the job's working directory, "
                             "which Ray deletes)")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides ``args`` give, as top-level config keys (empty when none)."""
    from benchmark.config_yaml import parse_overrides

    return parse_overrides(args.overrides, out=args.out, root=args.root)


def in_ray_job(cwd: str | None = None, env: dict[str, str] | None = None) -> bool:
    """Whether this process runs as (or under) a Ray job: Ray's job variables are set, or the current
    directory is inside Ray's unpacked ``--working-dir``."""
    env = os.environ if env is None else env
    cwd = os.getcwd() if cwd is None else cwd
    return any(env.get(k) for k in RAY_JOB_ENV) or RAY_WORKING_DIR_MARK in os.path.abspath(cwd)


def check_out_outside_job(out: str, allow_relative: bool, *, cwd: str | None = None,
                          env: dict[str, str] | None = None) -> None:
    """UserError for a relative local ``out`` inside a Ray job (results would die with the job's
    working directory), unless ``allow_relative``; a URI or an absolute path passes."""
    if allow_relative or "://" in out or os.path.isabs(out) or not in_ray_job(cwd, env):
        return
    raise UserError(f"out {out!r} is relative, and inside a Ray job it would land in the job's temporary working "
                    "directory, which Ray deletes; set an absolute path or a URI (--out /shared/results/x or "
                    "--set out=s3://bucket/prefix), or pass --allow-relative-out")
