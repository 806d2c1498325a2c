"""Optuna storage: the source of truth of a search, what makes it resumable.

A journal file by default (one JSON line per change, appended under a file lock), or any RDB URL.
Only the driver writes it (trials report through Ray Tune), so a killed driver leaves at most
one half-written last line (:func:`open_storage` cuts it) and trials marked RUNNING
(:func:`fail_interrupted` marks them FAIL, so their numbers are never reused).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmark.errors import UserError

DIRECTION = "maximize"
INTERRUPTED = "interrupted"  # user attribute of a trial that a stopped driver left running
WARM_START = "warm_start"  # user attribute naming the setting a warm-start trial was enqueued from


def masked(text: str, url: str | None = None) -> str:
    """``text`` with the password of a storage URL (``scheme://user:password@host``) shown as ``***``.

    ``url``: the URL whose password to hide wherever it appears in ``text`` (an error that quotes it);
    without it, ``text`` is taken as the URL itself.
    """
    from urllib.parse import urlsplit

    url = text if url is None else url
    try:
        password = urlsplit(url).password if "://" in url else None
    except ValueError:
        password = None
    if not password:
        return text
    return text.replace(f":{password}@", ":***@").replace(password, "***")


@contextmanager
def lock_storage(storage: str) -> Iterator[None]:
    """Hold ``storage`` for this process (:func:`benchmark.locks.hold`), or UserError naming the search that has it.

    A journal file or SQLite database is locked by a file beside it (``.<name>.craft-lock``);
    a server database (PostgreSQL, MySQL) is not locked: give each search its own study names there.
    """
    from benchmark.locks import hold

    path = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else storage
    if "://" in path:
        yield
        return
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with hold(os.path.join(folder, f".{name}.craft-lock"), f"Optuna storage {masked(storage)}"):
        yield


def repair_journal(path: str) -> bool:
    """Cut a half-written last line (a driver killed mid-append); True if one was cut."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return False
    with open(p, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return False
        data = p.read_bytes()
        f.truncate(data.rfind(b"\n") + 1)
    return True


def open_storage(storage: str, *, repair: bool = True) -> Any:
    """The Optuna storage behind ``storage`` (journal file path or RDB URL), opened before Ray starts.

    ``repair=False`` for readers (``--dry-run``, ``--export``): the journal is left as it is.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        try:
            return optuna.storages.RDBStorage(storage)
        except Exception as exc:  # bad URL, driver missing, server unreachable
            raise UserError(f"cannot open Optuna storage {masked(storage)}: "
                            f"{masked(str(exc).splitlines()[0], storage)}") from None
    folder = Path(storage).parent
    if not folder.is_dir():
        raise UserError(f"Optuna journal {storage} is in folder {folder}, which does not exist")
    if repair:
        repair_journal(storage)
    check_journal(storage)
    return JournalStorage(JournalFileBackend(storage))


def check_journal(path: str) -> None:
    """UserError naming the first whole line of the journal at ``path`` that is not a JSON record.

    Optuna would fail on it with a bare JSONDecodeError when it replays the journal; a half-written
    last line (no newline yet) is left to :func:`repair_journal`.
    """
    import json

    p = Path(path)
    if not p.is_file():
        return
    with open(p, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                break
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                shown = line[:60].decode("utf-8", "replace").strip()
                raise UserError(f"Optuna journal {path}: line {number} is not a JSON record ({shown!r}); restore the "
                                "journal from a copy, or remove that line to resume without the change it held")


def open_study(storage: Any, name: str) -> Any:
    """Load study ``name``, or create it (direction: maximise validation accuracy)."""
    import optuna

    return optuna.create_study(study_name=name, storage=storage, direction=DIRECTION, load_if_exists=True)


def fail_interrupted(study: Any) -> int:
    """Mark FAIL (and ``interrupted``) the trials a stopped driver left RUNNING; return how many.

    Call it only while no driver runs the study: a RUNNING trial is taken to belong to one that is gone.
    """
    from optuna.trial import TrialState

    left = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in left:
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(left)


def finished(study: Any) -> list[Any]:
    """Trials that count towards the requested number: run to their full budget or stopped by ASHA."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def load_existing(storage: Any, name: str) -> Any | None:
    """Study ``name`` if it exists (nothing is created), else None."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def completed(study: Any) -> list[Any]:
    """Trials that ran their whole budget: the candidates for the best configuration."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def best_trial(study: Any) -> Any | None:
    """The completed trial with the highest validation accuracy (the earliest on a tie), or None."""
    done = [t for t in completed(study) if t.value is not None]
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def enqueue_warm_start(study: Any, points: list[tuple[str, dict[str, Any]]], room: int) -> int:
    """Enqueue up to ``room`` of the labelled ``points`` not already finished or waiting; return how many."""
    from optuna.trial import TrialState

    present = {t.user_attrs.get(WARM_START) for t in study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING))}
    added = 0
    for label, params in points:
        if added >= room:
            break
        if label in present:
            continue
        study.enqueue_trial(params, user_attrs={WARM_START: label})
        added += 1
    return added
