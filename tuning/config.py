"""The ``craft tune`` config: YAML in, a checked :class:`SearchConfig` out, or one clear UserError.

Everything is checked here, before Ray starts: keys, types, methods, datasets (train and
validation images present), backbones, hyperparameters and search spaces, the storage location.
Relative paths (``out``, ``storage``, ``root``) are relative to the current directory, as every
``craft`` option; ``storage`` defaults to ``<out>/optuna.journal``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config_yaml import read_yaml
from benchmark.errors import UserError, show
from benchmark.results.store import check_location
from benchmark.sweep.config import SEED_LIMIT, check_seeds, expand_home
from craft.methods import METHODS
from tuning.space import Space, default_space, parse_space

SAMPLERS = ("tpe", "cmaes", "gp")
SAMPLER_NEEDS = {"cmaes": ("cmaes",), "gp": ("scipy", "torch")}  # Optuna imports these lazily
POOLABLE = ("dataset", "shots", "backbone")
KEYS = {
    "name": "study-name prefix (default: the config file's stem)",
    "methods": "methods to tune, e.g. [craft]",
    "datasets": "dataset keys, e.g. [digits_rotate]",
    "shots": "shots per class, e.g. [16]",
    "backbones": "backbones as [name:weights, ...] or {name: weights}, e.g. [craft-tiny:builtin]",
    "root": "data root (the folder holding the dataset folders)",
    "out": "results folder: final test cells (Parquet), figures, Ray Tune logs",
    "storage": "Optuna storage: a journal file path (default <out>/optuna.journal) or an RDB URL",
    "hparams": "fixed hyperparameters: method -> dataset ('*' = all) -> key: value",
    "space": "search space per method: method -> parameter -> spec (default: the method's built-in space)",
    "trials": "finished trials wanted per study",
    "max_concurrent_trials": "trials running at once per study",
    "sampler": "tpe, cmaes or gp",
    "seed": "sampler seed",
    "pruning": "ASHA on query milestones: {grace_fraction: 0.25, reduction_factor: 2}, or false",
    "warm_start": "enqueue the official settings and the method's defaults as the first trials",
    "search_seeds": "few-shot seeds a trial is scored on (mean validation accuracy)",
    "test_seeds": "seeds of the final test evaluation of the best configuration",
    "pool": "dimensions one study spans instead of one study each: any of dataset, shots, backbone",
}


@dataclass(frozen=True)
class Pruning:
    """ASHA: the first milestone at ``grace_fraction`` of the budget, then every ``reduction_factor`` times more."""

    grace_fraction: float = 0.25
    reduction_factor: int = 2


@dataclass
class SearchConfig:
    """A checked ``craft tune`` config."""

    path: str
    name: str
    methods: list[str]
    datasets: list[str]
    shots: list[int]
    backbones: dict[str, str]
    out: str
    storage: str
    root: str | None = None
    hparams: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    spaces: dict[str, Space] = field(default_factory=dict)
    trials: int = 30
    max_concurrent_trials: int = 2
    sampler: str = "tpe"
    seed: int = 0
    pruning: Pruning | None = field(default_factory=Pruning)
    warm_start: bool = True
    search_seeds: list[int] = field(default_factory=lambda: [1])
    test_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    pool: list[str] = field(default_factory=list)

    def fixed(self, method: str, dataset: str) -> dict[str, Any]:
        """Fixed hyperparameters of ``method`` on ``dataset``: the ``'*'`` entry, then the dataset's."""
        by_ds = self.hparams.get(method, {})
        return {**by_ds.get("*", {}), **by_ds.get(dataset, {})}

    def is_url(self) -> bool:
        return "://" in self.storage


def _list(raw: dict, key: str, kind: type, where: str, default: list | None = None) -> list:
    value = raw.get(key, default)
    if value is None:
        raise UserError(f"{where}: missing key {show(key)} ({KEYS[key]})")
    if isinstance(value, kind) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or any(isinstance(v, bool) or not isinstance(v, kind) for v in value):
        raise UserError(f"{where}: {key} must be a non-empty list of {kind.__name__}, got {show(value)}")
    if len(set(value)) != len(value):
        raise UserError(f"{where}: {key} lists a value twice: {show(value)}")
    return value


def _int(raw: dict, key: str, default: int, low: int, where: str) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{where}: {key} must be an integer >= {low}, got {show(value)}")
    return value


def _sampler_seed(raw: dict, where: str) -> int:
    """The sampler's seed: numpy takes < 2**32, and the search adds the trial count to it."""
    seed = _int(raw, "seed", 0, 0, where)
    if seed >= SEED_LIMIT:
        raise UserError(f"{where}: seed must be < {SEED_LIMIT:,} (it seeds numpy's generator), got {seed}")
    return seed


def _check_folder(path: str, where: str, what: str) -> None:
    folder = Path(path).parent
    if not folder.is_dir():
        raise UserError(f"{where}: {what} {path} is in folder {folder}, which does not exist; create it or choose another path")


def _storage(raw: dict, out: str, where: str) -> str:
    storage = raw.get("storage")
    if storage is None:
        if "://" in out:
            raise UserError(f"{where}: out {out} is not a local folder, so give storage: a journal file path or an RDB URL")
        return os.path.join(out, "optuna.journal")  # the out folder is created by the search
    if not isinstance(storage, str) or not storage:
        raise UserError(f"{where}: storage must be a journal file path or an RDB URL, got {show(storage)}")
    storage = expand_home(storage)
    if storage.startswith("sqlite:///"):
        _check_folder(storage[len("sqlite:///"):], where, "storage database")
    elif "://" not in storage:
        if Path(storage).is_dir():
            raise UserError(f"{where}: storage {storage} is a folder; give a journal file path inside it, e.g. {storage}/optuna.journal")
        _check_folder(storage, where, "storage journal file")
    return storage


def _hparams(raw: Any, methods: list[str], datasets: list[str], bench: dict[str, Any], where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Fixed hyperparameters, checked and normalised by ``craft bench``'s own config parser (so a
    trial's cells and the exported ones are the bench's cells: ``sigma: 1`` is ``1.0`` there too)."""
    from benchmark.sweep.config import config_from_dict

    raw = raw or {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: hparams must map method -> dataset ('*' = all) -> key: value, got {show(raw)}")
    for method, by_ds in raw.items():
        if method not in methods:
            raise UserError(f"{where}: hparams.{method} is not one of the tuned methods ({', '.join(methods)})")
        for ds, values in (by_ds.items() if isinstance(by_ds, dict) else ()):
            if ds != "*" and ds not in datasets:
                raise UserError(f"{where}: hparams.{method}.{ds} is not one of the datasets ({', '.join(datasets)}) nor '*'")
            if isinstance(values, dict) and "eval_every" in values:
                raise UserError(f"{where}: hparams.{method}.{ds}.eval_every is set by the search (evaluations land on the query milestones); remove it")
    return config_from_dict({**bench, "hparams": raw}, where).hparams


def _spaces(raw: Any, methods: list[str], fixed_union: dict[str, dict[str, Any]], where: str) -> dict[str, Space]:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: space must map method -> parameter -> spec, got {show(raw)}")
    extra = sorted(set(raw) - set(methods))
    if extra:
        raise UserError(f"{where}: space.{extra[0]} is not one of the tuned methods ({', '.join(methods)})")
    spaces = {}
    for m in methods:
        if m in raw:
            spaces[m] = parse_space(m, raw[m], f"{where}: space.{m}", fixed_union.get(m, {}))
        else:
            try:
                spaces[m] = default_space(m, fixed_union.get(m, {}))
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None
    return spaces


def _pruning(raw: Any, where: str) -> Pruning | None:
    if raw is False or raw is None:
        return None
    if raw is True:
        return Pruning()
    if not isinstance(raw, dict) or set(raw) - {"grace_fraction", "reduction_factor"}:
        raise UserError(f"{where}: pruning must be false or {{grace_fraction: 0.25, reduction_factor: 2}}, got {show(raw)}")
    grace = raw.get("grace_fraction", Pruning.grace_fraction)
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or not 0 < grace < 1:
        raise UserError(f"{where}: pruning.grace_fraction must be a number between 0 and 1 (exclusive), got {show(grace)}")
    rf = raw.get("reduction_factor", Pruning.reduction_factor)
    if isinstance(rf, bool) or not isinstance(rf, int) or rf < 2:
        raise UserError(f"{where}: pruning.reduction_factor must be an integer >= 2, got {show(rf)}")
    return Pruning(float(grace), rf)


def _check_data(cfg: SearchConfig, where: str) -> None:
    """Train and validation images of every (dataset, shots, search seed) exist; test is never looked at."""
    from benchmark.model.task import load_task_splits
    from benchmark.datasets.task_spec import TaskSpec

    for ds in cfg.datasets:
        for k in cfg.shots:
            for seed in cfg.search_seeds:
                try:
                    load_task_splits(TaskSpec(ds, k, seed, cfg.root, eval_test=False))
                except UserError as exc:
                    raise UserError(f"{where}: {exc}") from None


def _check_backbones(value: Any, where: str) -> dict[str, str]:
    from benchmark.model.loading import known_backbones
    from benchmark.sweep.config import parse_backbones

    if value is None:
        raise UserError(f"{where}: missing key 'backbones' ({KEYS['backbones']})")
    pairs = parse_backbones(value, where)
    known = set(known_backbones())
    for name, _ in pairs:
        if name not in known:
            raise UserError(f"{where}: unknown backbone {show(name)} (any name from open_clip.list_models() or craft-tiny)")
    if len({name for name, _ in pairs}) != len(pairs):
        raise UserError(f"{where}: backbones gives {show(value)}: one set of weights per backbone in a search")
    return dict(pairs)


def parse_config(raw: Any, path: str, *, check_data: bool = True) -> SearchConfig:
    """Check a loaded YAML mapping; ``path`` names it in errors and gives the default study prefix."""
    where = path
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a tune config must be a YAML mapping with keys {', '.join(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise UserError(f"{where}: name must be letters, digits, '.', '_' or '-', got {show(name)}")
    methods = _list(raw, "methods", str, where)
    for m in methods:
        if m not in METHODS:
            raise UserError(f"{where}: unknown method {show(m)}; known methods: {', '.join(sorted(METHODS))}")
        if m == "zero_shot_clip":
            raise UserError(f"{where}: method zero_shot_clip has no hyperparameters to search")
    datasets = _list(raw, "datasets", str, where)
    from benchmark.datasets.registry import get_spec

    for ds in datasets:
        try:
            get_spec(ds)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    shots = _list(raw, "shots", int, where, default=[16])
    if any(k < 1 for k in shots):
        raise UserError(f"{where}: shots must be positive, got {show(shots)}")
    backbones = _check_backbones(raw.get("backbones"), where)
    out = raw.get("out", os.path.join("results", name))
    if not isinstance(out, str) or not out:
        raise UserError(f"{where}: out must be a folder path or URI, got {show(out)}")
    out = expand_home(out)
    check_location(out)
    root = raw.get("root")
    root = expand_home(root) if isinstance(root, str) else root
    if root is not None and (not isinstance(root, str) or not Path(root).is_dir()):
        raise UserError(f"{where}: root {show(root)} is not a folder (it must hold the dataset folders)")
    search_seeds = check_seeds(_list(raw, "search_seeds", int, where, default=[1]), "search_seeds", where)
    bench = {"out": out, "root": root, "methods": methods, "datasets": datasets, "shots": shots, "seeds": search_seeds,
             "backbones": [f"{b}:{w}" for b, w in backbones.items()]}
    hparams = _hparams(raw.get("hparams"), methods, datasets, bench, where)
    fixed_union = {m: {k: v for by_ds in hparams.get(m, {}).values() for k, v in by_ds.items()} for m in methods}
    spaces = _spaces(raw.get("space"), methods, fixed_union, where)
    sampler = raw.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise UserError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {show(sampler)}")
    for module in SAMPLER_NEEDS.get(sampler, ()):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{where}: sampler {sampler} needs the Python package {show(module)} (pip install {module})")
    warm = raw.get("warm_start", True)
    if not isinstance(warm, bool):
        raise UserError(f"{where}: warm_start must be true or false, got {show(warm)}")
    pool = raw.get("pool", []) or []
    if not isinstance(pool, list) or any(p not in POOLABLE for p in pool):
        raise UserError(f"{where}: pool must be a list of {', '.join(POOLABLE)}, got {show(pool)}")
    cfg = SearchConfig(
        path=path, name=name, methods=methods, datasets=datasets, shots=shots, backbones=backbones,
        out=out, storage=_storage(raw, out, where), root=root, hparams=hparams, spaces=spaces,
        trials=_int(raw, "trials", 30, 1, where), max_concurrent_trials=_int(raw, "max_concurrent_trials", 2, 1, where),
        sampler=sampler, seed=_sampler_seed(raw, where), pruning=_pruning(raw.get("pruning", True), where),
        warm_start=warm, search_seeds=search_seeds,
        test_seeds=check_seeds(_list(raw, "test_seeds", int, where, default=[1, 2, 3]), "test_seeds", where),
        pool=list(pool),
    )
    if check_data:
        _check_data(cfg, where)
    return cfg


def load_search_config(path: str, *, check_data: bool = True) -> SearchConfig:
    """Read and check a ``craft tune`` YAML file."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} does not exist")
    raw = read_yaml(p, str(path))
    return parse_config(raw, str(path), check_data=check_data)
