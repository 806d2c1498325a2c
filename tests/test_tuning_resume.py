"""A real search on Ray, killed midway (SIGKILL of the driver) and resumed, with no test image on disk.

The built-in suite is written to a temporary cache and the test images of the searched dataset
are deleted: a search that read one would fail its trials ("image ... does not exist"). The
study must end with exactly the requested number of finished trials, unique trial numbers, and
the only failed trials those the kill interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from benchmark.datasets.builtin import ensure_builtin_suite, split_file
from tuning.config import load_search_config
from tuning.search import run_search
from tuning.storage import INTERRUPTED, WARM_START, open_storage, open_study
from tuning.studies import plan_studies

TRIALS = 4
DATASET, FOLDER, SHIFT = "digits_rotate", "digits-rotate", "rotate"


def read_study(journal: Path) -> optuna.Study:
    """The study, read without repairing or writing anything (the driver may be appending)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    (name,) = optuna.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def count(journal: Path) -> tuple[int, int]:
    """(finished, running) trials, or (0, 0) before the study exists."""
    if not journal.is_file():
        return 0, 0
    try:
        trials = read_study(journal).get_trials(deepcopy=False)
    except (ValueError, KeyError):
        return 0, 0
    states = [t.state for t in trials]
    S = optuna.trial.TrialState
    return states.count(S.COMPLETE) + states.count(S.PRUNED), states.count(S.RUNNING)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[list[str], dict[str, str], Path]:
    """The command line of a tiny search, its environment, its folder; the suite without test images."""
    cache = tmp_path / "cache"
    root = ensure_builtin_suite(cache / "builtin")
    splits = json.loads((root / FOLDER / split_file(SHIFT)).read_text())
    for name, _, _ in splits["test"]:
        (root / FOLDER / "images" / name).unlink()
    cfg = {
        "name": "resume", "methods": ["craft"], "datasets": [DATASET], "shots": [4],
        "backbones": {"craft-tiny": "builtin"}, "out": str(tmp_path / "out"),
        "hparams": {"craft": {"*": {"budget": 80, "popsize": 10, "intrinsic_dim": 16}}},
        "trials": TRIALS, "max_concurrent_trials": 2, "sampler": "tpe",
    }
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "CRAFT_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmark.cli", "tune", str(path), "--search-only", "--no-progress", "--num-cpus", "2"]
    return cmd, env, tmp_path


@pytest.mark.slow
def test_search_killed_midway_resumes_to_exactly_the_requested_trials_without_test_images(setup) -> None:
    cmd, env, tmp = setup
    journal = tmp / "out" / "optuna.journal"
    log = open(tmp / "first.log", "wb")
    first = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None:
            done, running = count(journal)
            if done >= 1 and running >= 1:
                break
            time.sleep(0.2)
        assert first.poll() is None, f"the search ended before it could be killed:\n{(tmp / 'first.log').read_text()[-3000:]}"
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = count(journal)
        assert 1 <= killed_at[0] < TRIALS

        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)  # whatever of the killed driver's Ray is left
        except ProcessLookupError:
            pass
        log.close()

    study = read_study(journal)
    S = optuna.trial.TrialState
    by_state = {s: [t for t in study.trials if t.state == s] for s in S}
    assert len(by_state[S.COMPLETE]) + len(by_state[S.PRUNED]) == TRIALS
    assert len(by_state[S.COMPLETE]) >= 1 and not by_state[S.RUNNING]
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))
    # The only failures are the trials the kill interrupted: no trial failed reading a test image.
    assert by_state[S.FAIL] and all(t.user_attrs.get(INTERRUPTED) for t in by_state[S.FAIL])
    assert study.trials[0].user_attrs.get(WARM_START)  # the official settings went first
    assert f"{TRIALS}/{TRIALS} trials finished" in second.stdout
    # The server encoded train and validation features only (the cache records every encoded set).
    encoded = [json.loads(p.read_text()) for p in (tmp / "cache" / "features").glob("*.json")]
    assert encoded and {e["split"] for e in encoded} == {"train", "val"}




def test_a_finished_search_run_again_starts_nothing(setup, monkeypatch) -> None:
    import ray

    cmd, env, tmp = setup
    monkeypatch.setenv("CRAFT_BENCH_CACHE", env["CRAFT_BENCH_CACHE"])
    cfg = load_search_config(str(tmp / "resume.yaml"), check_data=True)
    Path(cfg.out).mkdir()
    storage = open_storage(cfg.storage)
    for study in plan_studies(cfg):
        ot = open_study(storage, study.name)
        for v in range(TRIALS):
            t = ot.ask()
            study.space.sample(t)
            ot.tell(t, float(v))
    statuses = run_search(cfg)
    assert [(s.finished, s.requested) for s in statuses] == [(TRIALS, TRIALS)]
    assert not ray.is_initialized() and len(read_study(Path(cfg.storage)).trials) == TRIALS
