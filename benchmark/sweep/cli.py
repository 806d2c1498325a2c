"""``craft bench CONFIG.yaml``: plan a sweep, or run what is missing of it on Ray.

Everything that can be wrong with the input (config keys and values, the data root, datasets,
backbones, the results location, the cluster address) is reported as one sentence before any
run starts and before anything is written. Rerunning the same command skips done cells.
"""

from __future__ import annotations

import argparse
import logging

from benchmark.errors import UserError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep config (YAML); see configs/demo.yaml and configs/paper_rn50.yaml")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (cells, estimated queries, which are done) and run nothing")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on (host:port or ray://host:10001; default: RAY_ADDRESS, else this machine)")
    parser.add_argument("--rerun-failed", action="store_true", help="run failed cells again (done cells are always skipped)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs to place model servers on (default: the cluster's now; set it when an autoscaling "
                             "cluster has yet to start its GPU nodes)")
    parser.add_argument("--dashboard", action="store_true",
                        help="start the local runtime's Ray dashboard, on 127.0.0.1 only")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                        help="a line per running cell (generation, queries, validation accuracy) at most this often (default 30)")
    parser.add_argument("--no-data-check", action="store_true",
                        help="with --dry-run: plan without reading the data root or datasets (a preview before downloading)")
    parser.add_argument("--gpu", default=None, metavar="NAME",
                        help="with --dry-run: estimate GPU-hours on this GPU from craft perf's measured rates (e.g. h100)")
    from benchmark.sweep.cli_options import add_override_arguments

    add_override_arguments(parser)
    add_track_argument(parser)


def add_track_argument(parser: argparse.ArgumentParser) -> None:
    """``--track mlflow[:URI]|wandb[:PROJECT]`` (repeatable), shared with ``craft tune``."""
    parser.add_argument("--track", action="append", metavar="mlflow[:URI]|wandb[:PROJECT]",
                        help="log each cell as it finishes to MLflow (default: file store OUT/_mlruns) or W&B "
                             "(default project craft-bench, offline under OUT/_wandb unless WANDB_MODE is set); "
                             "repeat for both; needs pip install 'craft-bench[track]'")


def open_trackers(values: list[str] | None, out: str) -> tuple[list, object]:
    """The trackers ``--track`` names (checked, client libraries imported) and an ``on_cell`` for
    :func:`~benchmark.sweep.runner.run_sweep` that logs a cell to each (None without ``--track``)."""
    if not values:
        return [], None
    from benchmark.track.trackers import open_tracker, parse_track

    trackers = [open_tracker(spec, out) for spec in [parse_track(v) for v in values]]

    def on_cell(rows: list[dict]) -> None:
        for tracker in trackers:
            tracker.log_cell(rows)

    return trackers, on_cell


def run(args: argparse.Namespace) -> int:
    import os

    from benchmark.results.store import check_location
    from benchmark.sweep.config import load_config
    from benchmark.sweep.plan import check_inputs, expand, format_plan, make_plan

    if args.num_cpus is not None and (args.address or os.environ.get("RAY_ADDRESS")):
        raise UserError("--num-cpus sizes a local Ray runtime; a cluster given by --address or RAY_ADDRESS has its own CPUs")
    if not args.progress_every > 0:
        raise UserError(f"--progress-every must be a number of seconds > 0, got {args.progress_every}")
    for flag in ("num_cpus", "gpus"):
        value = getattr(args, flag)
        if value is not None and value < (1 if flag == "num_cpus" else 0):
            raise UserError(f"--{flag.replace('_', '-')} must be {'>= 1' if flag == 'num_cpus' else '>= 0'}, got {value}")
    if args.track:
        from benchmark.track.trackers import parse_track

        for value in args.track:  # a typo or a missing library, before the config is even read
            parse_track(value)
    from benchmark.sweep.cli_options import check_out_outside_job, config_overrides
    from benchmark.sweep.estimate import check_gpu

    if args.no_data_check and not args.dry_run:
        raise UserError("--no-data-check only previews a plan: give it with --dry-run")
    if args.gpu is not None:
        check_gpu(args.gpu)
    cfg = load_config(args.config, config_overrides(args))
    check_out_outside_job(cfg.out, args.allow_relative_out)
    cells = expand(cfg)
    if not args.no_data_check:
        for note in check_inputs(cfg):  # said once, before anything runs
            log.info("note: %s", note)
    if args.dry_run:
        print(format_plan(make_plan(cells, cfg.out), cfg, args.rerun_failed, gpu=args.gpu))
        return 0
    check_location(cfg.out)
    _note_code_version()
    trackers, on_cell = open_trackers(args.track, cfg.out)

    from benchmark.stop_watch import say_on_forced_exit
    from benchmark.sweep.runner import resolve_weights, run_sweep

    weights = resolve_weights(cells, cfg.weights)  # on this machine, before Ray starts; staged to the servers
    say_on_forced_exit(f"done cells are kept; run craft bench {args.config} again to resume")
    # The folder is locked, cleaned and listed once, before Ray starts: a second driver is refused at once.
    try:
        summary = run_sweep(cells, cfg.out, cfg.server, address=args.address, num_cpus=args.num_cpus,
                            dashboard=args.dashboard, rerun_failed=args.rerun_failed, progress=not args.no_progress,
                            gpus=args.gpus, config=cfg, on_cell=on_cell,
                            weights=weights, progress_every=args.progress_every)
    finally:
        for tracker in trackers:  # what was logged stays logged (W&B writes its files' last records here)
            tracker.close()
    for tracker in trackers:
        log.info("tracked: %s", tracker.where())
    if summary.skipped == len(cells):
        print(f"nothing to run: all {summary.skipped} cells of {args.config} are done or failed before "
              f"(--rerun-failed retries failed ones); results in {cfg.out}")
        return 0
    print(
        f"{summary.done} cells done, {summary.skipped} already done or failed before (skipped), "
        f"{summary.failed} failed, in {summary.wall_s:.1f} s; results and per-cell logs in {cfg.out}"
    )
    for line in summary.moved_aside:
        log.warning("damaged result file moved aside, its cell run again: %s", line)
    for line in summary.failures:
        log.error("failed: %s", line)
    if summary.failed:
        log.error("see each failed cell's log under _logs/ in the results folder (craft results lists their errors); "
                  "retry them with --rerun-failed")
    return 1 if summary.failed else 0


def _note_code_version() -> None:
    """Say so when a Ray job's upload left ``.git`` behind: results would record no commit."""
    from benchmark.results.provenance import code_version
    from benchmark.sweep.cli_options import in_ray_job

    version = code_version()
    if in_ray_job() and all(c in "0123456789." for c in version.split("+")[0]):  # a package version, no commit
        log.warning("note: no .git in this job's working directory, so results record code_version %s, not a commit; "
                    "submit with RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES=.venv,venv,__pycache__ so that Ray uploads "
                    ".git (docs/cluster.md)", version)
