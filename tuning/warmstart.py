"""Warm start: the official settings and the method's defaults, as the first trials of a study.

The official CraFT settings are those of ``benchmark/configs/official_craft.yaml`` (the file a
``craft bench`` config includes as ``official_craft``). A study on a dataset with an official row
starts with that row; a study on other datasets (the built-in suite) starts with every distinct
official setting. The method's defaults come next. Each point is cut down to the searched
parameters (values outside the space are left to the sampler).
"""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from craft.methods import make_config
from tuning.studies import Study

OFFICIAL = "official_craft.yaml"
# CraFT's two loss weights default to its single official ``weight``.
DEFAULTS_FROM = {"lambda_i": "weight", "lambda_o": "weight"}


@lru_cache(maxsize=1)
def official_settings() -> dict[str, dict[str, dict[str, Any]]]:
    """``method -> dataset -> hyperparameters`` of the official code."""
    text = resources.files("benchmark").joinpath("configs", OFFICIAL).read_text()
    return {m: {d: dict(v) for d, v in by_ds.items() if d != "*"} for m, by_ds in yaml.safe_load(text)["hparams"].items()}


def _resolved(values: dict[str, Any]) -> dict[str, Any]:
    """Values with the aliases filled in (``lambda_i: None`` means the official ``weight``)."""
    out = dict(values)
    for key, source in DEFAULTS_FROM.items():
        if out.get(key) is None and source in out:
            out[key] = out[source]
    return out


def warm_start_points(study: Study) -> list[tuple[str, dict[str, Any]]]:
    """Labelled parameter sets to enqueue first: official rows, then the method's defaults.

    A set reached from several sources is enqueued once, its label naming them all.
    """
    official = official_settings().get(study.method, {})
    own = [d for d in study.datasets if d in official]
    sources = [(f"official:{d}", official[d]) for d in own] or [(f"official:{d}", v) for d, v in sorted(official.items())]
    dataset = study.datasets[0]
    sources.append(("defaults", asdict(make_config(study.method, study.fixed.get(dataset, {})))))
    points: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for label, values in sources:
        params = study.space.project(_resolved(values))
        if params:
            points.setdefault(repr(sorted(params.items())), ([], params))[0].append(label)
    return [(",".join(labels), params) for labels, params in points.values()]
