"""The search: per study, Ray Tune trials with Optuna choosing and ASHA pruning, resumable.

Optuna storage is the source of truth. On each start, trials a killed driver left RUNNING are
marked FAIL (their numbers are never reused), the finished trials (COMPLETE, or PRUNED by ASHA)
are counted, and only the missing number is run, so ``craft tune CONFIG`` again after a kill
ends with exactly the requested number. Trials reserve CPU only and share the model server
actors of ``craft bench`` (:func:`benchmark.serve.pool.start_servers`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tuning.config import SearchConfig
from tuning.objective import trainable
from tuning.storage import enqueue_warm_start, fail_interrupted, finished, open_storage, open_study
from tuning.studies import Study, plan_studies
from tuning.warmstart import warm_start_points

if TYPE_CHECKING:
    from benchmark.serve.pool import ServerPool

METRIC, MODE = "top1_val", "max"
MAX_ROUNDS = 3  # Tune runs per study while trials fail with errors but others finish


@dataclass
class StudyStatus:
    """Where a study stands after the search."""

    name: str
    requested: int
    finished: int
    failed_now: int = 0
    wall_s: float = 0.0


def make_sampler(kind: str, seed: int) -> Any:
    """TPE (default), CMA-ES or GP, seeded; conditional parameters fall back to independent sampling."""
    import optuna

    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _searcher_cls():
    from ray.tune.search.optuna import OptunaSearch

    class MilestoneOptunaSearch(OptunaSearch):
        """OptunaSearch that steps intermediate values by queries and tells ASHA-stopped trials as PRUNED."""

        def __init__(self, **kwargs: Any) -> None:
            self._reported: dict[str, set[int]] = {}
            super().__init__(**kwargs)

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if trial_id in self._ot_trials and trial_id not in self._completed_trials:
                self._report(trial_id, result)

        def _report(self, trial_id: str, result: dict) -> None:
            """Record a milestone once (Tune hands the last result to on_trial_complete only)."""
            steps = self._reported.setdefault(trial_id, set())
            step = int(result["queries"])
            if step not in steps:
                steps.add(step)
                self._ot_trials[trial_id].report(result[self.metric], step)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            import optuna

            if trial_id in self._completed_trials or trial_id not in self._ot_trials:
                return
            trial = self._ot_trials[trial_id]
            if result and self.metric in result and not error:
                self._report(trial_id, result)
            if error or not result or self.metric not in result:
                state, value = optuna.trial.TrialState.FAIL, None
            elif result.get("fraction", 0.0) < 1.0:
                state, value = optuna.trial.TrialState.PRUNED, None
            else:
                state, value = optuna.trial.TrialState.COMPLETE, result[self.metric]
            self._ot_study.tell(trial, value, state=state)
            self._completed_trials.add(trial_id)

    return MilestoneOptunaSearch


def _tune_once(study: Study, cfg: SearchConfig, storage: Any, servers: ServerPool, leases: Any, n: int,
               progress: bool, callbacks: list[Any] | None = None) -> None:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    ot_study = open_study(storage, study.name)
    searcher = _searcher_cls()(
        space=study.space.sample, metric=METRIC, mode=MODE, storage=storage, study_name=study.name,
        sampler=make_sampler(cfg.sampler, cfg.seed + len(ot_study.trials)),
    )
    m = study.milestones
    scheduler = (ASHAScheduler(time_attr="queries", metric=METRIC, mode=MODE, max_t=m.budget * study.cells_per_trial,
                               grace_period=m.grace, reduction_factor=cfg.pruning.reduction_factor)
                 # A white-box reference (CoOp) sends no queries: no query milestones to prune at.
                 if cfg.pruning is not None and m.budget > 0 and len(m.queries) * study.cells_per_trial > 1
                 else FIFOScheduler())
    fn = tune.with_resources(tune.with_parameters(trainable, study=study, servers=servers, leases=leases), {"cpu": 1})
    local = "://" not in cfg.out
    tuner = tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n,
                                    max_concurrent_trials=cfg.max_concurrent_trials, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"{study.name.replace('/', '_')}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=os.path.abspath(os.path.join(cfg.out, "ray_tune")) if local else None,
            failure_config=tune.FailureConfig(max_failures=0), verbose=1 if progress else 0,
            callbacks=callbacks or None,
        ),
    )
    tuner.fit()


def _prepare(study: Study, cfg: SearchConfig, storage: Any) -> int:
    """Fail what a killed driver left running, enqueue the warm start; return how many trials are missing."""
    from optuna.trial import TrialState

    ot_study = open_study(storage, study.name)
    fail_interrupted(ot_study)
    missing = cfg.trials - len(finished(ot_study))
    if missing > 0 and cfg.warm_start:
        waiting = len(ot_study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        enqueue_warm_start(ot_study, warm_start_points(study), missing - waiting)
    return missing


def server_runs(studies: list[Study]) -> set[tuple[str, str, str]]:
    """The (backbone, weights, method) of every run the studies make: what :func:`start_servers` serves."""
    return {(t.backbone, t.weights, s.method) for s in studies for t in s.targets}


def run_search(cfg: SearchConfig, *, address: str | None = None, num_cpus: int | None = None,
               progress: bool = True, callbacks: Callable[[str], list[Any]] | None = None) -> list[StudyStatus]:
    """Bring every study of ``cfg`` to ``cfg.trials`` finished trials; return where each stands.
    ``callbacks(study_name)``: Ray Tune callbacks for that study's trials (experiment tracking)."""
    if not cfg.is_url():  # the default journal lives in ``out``, created here
        os.makedirs(os.path.dirname(os.path.abspath(cfg.storage)), exist_ok=True)
    storage = open_storage(cfg.storage)
    studies = plan_studies(cfg)
    todo = [s for s in studies if _prepare(s, cfg, storage) > 0]
    statuses = {s.name: StudyStatus(s.name, cfg.trials, len(finished(open_study(storage, s.name)))) for s in studies}
    if not todo:
        return list(statuses.values())

    marked = 0  # running trials this driver marked interrupted

    def mark() -> int:
        # This driver is the only one on the storage (tuning.storage.lock_storage): what runs is ours.
        nonlocal marked
        marked += sum(fail_interrupted(open_study(storage, s.name)) for s in todo)
        return marked

    from benchmark.stop_watch import say_on_forced_exit

    say_on_forced_exit(f"resume with: craft tune {cfg.path}",  # if Ctrl-C cannot end this thread (stop_watch)
                       lambda: f"{mark()} running trial(s) marked failed (interrupted)")
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.leases import start_leases
    from benchmark.serve.pool import start_servers, stop_servers
    from benchmark.model.weights import resolve
    from benchmark.serve.ray_runtime import init_ray
    from benchmark.serve.staging import stage

    runs = server_runs(todo)
    weights = {key: resolve(*key) for key in dict.fromkeys((b, w) for b, w, _ in runs)}  # before Ray starts
    init_ray(address, num_cpus)
    # Ray Tune's own SIGINT handler ends a round "gracefully" and returns, so the loop below would
    # start another; without it Ctrl-C raises KeyboardInterrupt out of fit() and ends the search.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    import ray

    # On GPUs a server per GPU takes all the trials placed on it; on CPUs a server per trial at once
    # (a CPU server computes under one interpreter lock), each trial's cell on the least-loaded one.
    on_gpus = ray.cluster_resources().get("GPU", 0) > 0
    options = ServerOptions(runs_per_server=cfg.max_concurrent_trials if on_gpus else 1)
    servers = start_servers(runs, options, staged=stage(weights), runs_at_once=cfg.max_concurrent_trials)
    leases = None
    try:
        leases = start_leases(servers)
        for study in todo:
            start = time.perf_counter()
            status = statuses[study.name]
            for _ in range(MAX_ROUNDS):
                missing = _prepare(study, cfg, storage)
                if missing <= 0:
                    break
                before = len(finished(open_study(storage, study.name)))
                _tune_once(study, cfg, storage, servers, leases, missing, progress,
                           callbacks(study.name) if callbacks else None)
                after = len(finished(open_study(storage, study.name)))
                status.failed_now += missing - (after - before)
                if after == before:
                    break
            status.finished = len(finished(open_study(storage, study.name)))
            status.wall_s = time.perf_counter() - start
    except KeyboardInterrupt:
        raise SearchInterrupted(mark()) from None
    finally:
        stop_servers(servers)  # free their GPUs for the final evaluation
        if leases is not None:
            ray.kill(leases)
    return list(statuses.values())


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C ended the search; ``marked`` running trials were marked FAIL (``interrupted``)."""

    def __init__(self, marked: int) -> None:
        super().__init__(marked)
        self.marked = marked
