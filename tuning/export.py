"""After the search: the best configuration per study, exported for ``craft bench`` and tested.

The export is a ``craft bench`` config fragment, ``{hparams: {method: {dataset: params}}}``, with
a comment header naming each study and its best validation accuracy; a bench config includes it
(``include: [path/to/export.yaml]``). The final evaluation runs the same hyperparameters as
ordinary benchmark cells on test over the config's ``test_seeds``, into ``out``: the cells a
``craft bench`` run of the export would make, so that run finds them done.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import UserError
from benchmark.files import write_atomic
from benchmark.sweep.cell import Cell
from tuning.storage import masked
from tuning.config import SearchConfig
from tuning.storage import best_trial, finished, load_existing, open_storage
from tuning.studies import Study, plan_studies


@dataclass
class Best:
    """The best completed trial of a study."""

    study: Study
    number: int
    top1_val: float
    params: dict[str, Any]
    finished: int


def best_per_study(cfg: SearchConfig, storage: Any | None = None) -> list[Best]:
    """The best completed trial of every study; a UserError names a study that has none."""
    if storage is None:
        if not cfg.is_url() and not Path(cfg.storage).is_file():
            raise UserError(f"no search yet: {masked(cfg.storage)} does not exist; run craft tune {cfg.path} first")
        storage = open_storage(cfg.storage, repair=False)
    out = []
    for study in plan_studies(cfg):
        ot = load_existing(storage, study.name)
        best = best_trial(ot) if ot is not None else None
        if best is None:
            raise UserError(f"study {study.name} has no completed trial yet in {masked(cfg.storage)}; run craft tune {cfg.path} first")
        out.append(Best(study, best.number, float(best.value), dict(best.params), len(finished(ot))))
    return out


def exported_hparams(bests: list[Best]) -> dict[str, dict[str, dict[str, Any]]]:
    """``method -> dataset -> hyperparameters``; two studies giving one (method, dataset) is a UserError."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    source: dict[tuple[str, str], str] = {}
    for b in bests:
        for ds in b.study.datasets:
            key = (b.study.method, ds)
            if key in source:
                raise UserError(
                    f"studies {source[key]} and {b.study.name} both give {ds} a {b.study.method} setting; a bench "
                    "config holds one per (method, dataset): pool over shots/backbones (pool: [shots, backbone]) "
                    "or tune them in separate configs"
                )
            source[key] = b.study.name
            out.setdefault(b.study.method, {})[ds] = b.study.hparams(ds, b.params)
    return out


def write_export(cfg: SearchConfig, path: str, bests: list[Best]) -> str:
    """Write the export YAML atomically; return its text."""
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise UserError(f"cannot write {path}: folder {folder} does not exist")
    header = [f"# Best configurations found by `craft tune {cfg.path}` ({dt.date.today().isoformat()}),",
              f"# scored on few-shot validation (seeds {cfg.search_seeds}), never on test. Storage: {masked(cfg.storage)}"]
    for b in bests:
        note = "" if b.finished >= cfg.trials else f" (search unfinished: {b.finished}/{cfg.trials})"
        header.append(f"# study {b.study.name}: best val {b.top1_val:.2f}% (trial {b.number}, "
                      f"{b.finished} trials){note}")
    body = yaml.safe_dump({"hparams": exported_hparams(bests)}, sort_keys=True, default_flow_style=False)
    text = "\n".join(header) + "\n" + body
    write_atomic(path, lambda f: f.write(text.encode()))
    return text


def final_cells(cfg: SearchConfig, bests: list[Best]) -> list[Cell]:
    """The best configurations as the cells ``craft bench`` makes of the export, over ``cfg.test_seeds``.

    They are planned by the bench's own config and planner, so a bench config that includes the
    export (with the same datasets, shots, seeds and backbones) finds them done.
    """
    from benchmark.sweep.config import config_from_dict
    from benchmark.sweep.plan import expand

    hparams = exported_hparams(bests)
    cells: list[Cell] = []
    for b in bests:
        t = b.study.targets
        bench = config_from_dict({
            "out": cfg.out, "root": cfg.root, "methods": [b.study.method], "datasets": b.study.datasets,
            "shots": sorted({x.shots for x in t}), "seeds": cfg.test_seeds,
            "backbones": sorted({f"{x.backbone}:{x.weights}" for x in t}),
            "hparams": {b.study.method: {ds: hparams[b.study.method][ds] for ds in b.study.datasets}},
        }, f"the export of {cfg.path}")
        cells += expand(bench)
    return cells
