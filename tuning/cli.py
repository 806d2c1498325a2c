"""``craft tune CONFIG.yaml``: search, figures, final test evaluation; ``--export OUT.yaml`` writes the winners.

Run again after an interruption: the search resumes from its Optuna storage and stops at the
requested number of finished trials; final cells already in ``out`` are skipped.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="tune config (YAML); see configs/tune_builtin.yaml and docs/tuning.md")
    parser.add_argument("--export", metavar="OUT.yaml",
                        help="write the best configuration per study as a craft bench include, then stop (no search)")
    parser.add_argument("--search-only", action="store_true",
                        help="run the search and figures, not the final test evaluation")
    parser.add_argument("--dry-run", action="store_true", help="check the config, list the studies and their progress, run nothing")
    parser.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS, else a local runtime)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime")
    parser.add_argument("--no-progress", action="store_true", help="no Ray Tune progress tables")
    from benchmark.sweep.cli_options import add_override_arguments

    add_override_arguments(parser)
    from benchmark.sweep.cli import add_track_argument

    add_track_argument(parser)  # trials through Ray Tune's MLflow/W&B callbacks, final cells as craft bench logs them


def run(args: argparse.Namespace) -> int:
    import optuna

    from benchmark.errors import UserError
    from tuning.config import load_search_config

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.num_cpus is not None and args.num_cpus < 1:  # 0 would mean "all of them" to the runtime
        raise UserError(f"--num-cpus must be >= 1, got {args.num_cpus}")

    if args.track:
        from benchmark.track.trackers import parse_track

        args.track_specs = [parse_track(v) for v in args.track]  # a typo or a missing library: before anything
    from benchmark.sweep.cli_options import check_out_outside_job, config_overrides

    cfg = load_search_config(args.config, overrides=config_overrides(args))
    check_out_outside_job(cfg.out, args.allow_relative_out)
    if args.export:
        return _export(cfg, args.export)
    if args.dry_run:
        return _dry_run(cfg)
    from tuning.storage import lock_storage

    with lock_storage(cfg.storage):  # a second search on this storage would fail the first's running trials
        return _search(cfg, args)


def _search(cfg, args) -> int:
    import sys

    from benchmark.errors import UserError
    from tuning.search import SearchInterrupted, run_search

    callbacks = None
    if args.track:
        from tuning.tracking import prepare_offline, trial_callbacks

        prepare_offline(args.track_specs)
        callbacks = lambda study: trial_callbacks(args.track_specs, cfg.out, study)  # noqa: E731
    try:
        statuses = run_search(cfg, address=args.address, num_cpus=args.num_cpus, progress=not args.no_progress,
                              callbacks=callbacks)
    except SearchInterrupted as stop:
        print(f"interrupted: the search stopped, {stop.marked} running trial(s) marked failed (interrupted); "
              f"resume with: craft tune {cfg.path}", file=sys.stderr)
        return 130
    short = [s for s in statuses if s.finished < s.requested]
    for s in statuses:
        failed = f", {s.failed_now} failed this run" if s.failed_now else ""
        print(f"study {s.name}: {s.finished}/{s.requested} trials finished{failed} ({s.wall_s:.1f} s)")
    _figures(cfg)
    if short:
        raise UserError(f"{len(short)} stud{'y' if len(short) == 1 else 'ies'} did not reach {cfg.trials} finished trials "
                        f"(failed trials' errors are under {cfg.out}/ray_tune); run craft tune {cfg.path} again to resume")
    from tuning.export import best_per_study

    bests = best_per_study(cfg)
    for b in bests:
        print(f"best of {b.study.name}: val {b.top1_val:.2f}% (trial {b.number}) {b.params}")
    if args.search_only:
        return 0
    return _final(cfg, bests, args)


def _export(cfg, path: str) -> int:
    from tuning.export import best_per_study, write_export

    text = write_export(cfg, path, best_per_study(cfg))
    print(f"wrote {path}\n{text}")
    return 0


def _dry_run(cfg) -> int:
    import os

    from tuning.storage import finished, load_existing, masked, open_storage
    from tuning.studies import plan_studies

    storage = open_storage(cfg.storage, repair=False) if cfg.is_url() or os.path.isfile(cfg.storage) else None
    for s in plan_studies(cfg):
        study = load_existing(storage, s.name) if storage is not None else None
        done = len(finished(study)) if study is not None else 0
        print(f"study {s.name}: {done}/{cfg.trials} trials finished; milestones (queries) {list(s.milestones.queries)}; "
              f"searching {', '.join(s.space.names)}")
    print(f"storage: {masked(cfg.storage)}")
    return 0


def _figures(cfg) -> None:
    """The studies' figures; a figure that cannot be drawn is reported, the search's result stands."""
    from benchmark.report.plots import plot_optuna

    try:
        paths = plot_optuna(cfg.storage, f"{cfg.out}/figures", on_skip=lambda why: print(f"figure skipped: {why}"))
    except (RuntimeError, ValueError) as exc:  # e.g. fANOVA on trials that all scored the same
        print(f"figures not drawn: {type(exc).__name__}: {exc}")
        return
    for p in paths:
        print(f"figure: {p}")


def _final(cfg, bests, args) -> int:
    from benchmark.sweep.runner import run_sweep
    from tuning.export import final_cells

    from benchmark.sweep.cli import open_trackers

    cells = final_cells(cfg, bests)
    trackers, on_cell = open_trackers(args.track, cfg.out)
    try:
        summary = run_sweep(cells, cfg.out, address=args.address, num_cpus=args.num_cpus, progress=not args.no_progress,
                            on_cell=on_cell)
    finally:
        for tracker in trackers:
            tracker.close()
    for tracker in trackers:
        print(f"tracked: {tracker.where()}")
    print(f"final test evaluation: {summary.done} cells done, {summary.skipped} already done, "
          f"{summary.failed} failed; results in {cfg.out}")
    for line in summary.failures:
        print(f"failed: {line}")
    from benchmark.report.load import load_results

    df = load_results(cfg.out)
    df = df[df["cell_id"].isin({c.cell_id for c in cells}) & (df["eval_dataset"] == df["dataset"])]
    for (method, ds, shots, bb), g in df.groupby(["method", "dataset", "shots", "backbone"]):
        spread = f" ± {g['top1_test'].std():.2f}" if len(g) > 1 else ""  # std over seeds, as craft table
        print(f"{method} {ds} {shots}-shot {bb}: test {g['top1_test'].mean():.2f}{spread}% "
              f"over seeds {sorted(g['seed'].tolist())} (val {g['top1_val'].mean():.2f}%)")
    return 1 if summary.failed else 0
