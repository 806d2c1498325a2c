"""``craft tune --track``: each trial through Ray Tune's own MLflow or W&B logger callback.

Trials go to their own experiment (MLflow) or group (W&B), ``<results name>-trials``, tagged with
their study: Tune logs each trial's config as params and every reported result (one per query
milestone: ``top1_val``, ``queries``, ``fraction``) as a step. The final test cells are logged as
``craft bench`` logs cells (:mod:`benchmark.track.trackers`), into the results' own experiment.
Offline by default, in the same places: MLflow's file store ``<out>/_mlruns``, W&B under ``<out>/_wandb``.
"""

from __future__ import annotations

import os
from typing import Any

from benchmark.track.trackers import DEFAULT_PROJECT, WANDB_DIR, TrackSpec, experiment_name, mlflow_uri


def prepare_offline(specs: list[TrackSpec]) -> None:
    """Set what the client libraries read from the environment, before Ray starts (its workers inherit it):
    W&B offline unless ``WANDB_MODE`` says otherwise, MLflow's file store allowed where one is used."""
    for spec in specs:
        if spec.kind == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
        elif mlflow_uri(spec.target, ".").startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def trial_callbacks(specs: list[TrackSpec], out: str, study: str) -> list[Any]:
    """Ray Tune logger callbacks for the trials of ``study``, one per tracker."""
    callbacks: list[Any] = []
    group = f"{experiment_name(out)}-trials"
    for spec in specs:
        if spec.kind == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            callbacks.append(MLflowLoggerCallback(tracking_uri=mlflow_uri(spec.target, out), experiment_name=group,
                                                  tags={"study": study}, save_artifact=False))
        else:
            from ray.air.integrations.wandb import WandbLoggerCallback

            directory = os.path.abspath(os.path.join(out, WANDB_DIR))
            os.makedirs(directory, exist_ok=True)
            callbacks.append(WandbLoggerCallback(project=spec.target or DEFAULT_PROJECT, group=f"{group}/{study}",
                                                 mode=os.environ.get("WANDB_MODE", "offline"), dir=directory,
                                                 tags=[study[:64]]))
    return callbacks
