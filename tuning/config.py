"""The ``craft tune`` config: YAML in, a checked :class:`SearchConfig` out, or one clear UserError.

Everything is checked here, before Ray starts: keys, types, methods, datasets (train and
validation images present), backbones, hyperparameters and search spaces, the storage location.
The grid keys (methods, datasets, shots, backbones, hparams) are read by :mod:`benchmark.sweep.grid`,
as ``craft bench`` reads a sweep's.
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
from benchmark.sweep.config import expand_home
from benchmark.sweep.grid import SEED_LIMIT, Grid, check_seeds, hparams_for, parse_grid
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
        return hparams_for(self.hparams, method, dataset)

    def is_url(self) -> bool:
        return "://" in self.storage


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


def _check_fixed(raw: Any, methods: tuple[str, ...], datasets: tuple[str, ...], where: str) -> None:
    """What a search's fixed hyperparameters may not give beyond a bench config's: settings of
    methods or datasets it does not tune, or ``eval_every`` (the search places evaluations)."""
    for method, by_ds in (raw or {}).items():
        if method not in methods:
            raise UserError(f"{where}: hparams.{method} is not one of the tuned methods ({', '.join(methods)})")
        for ds, values in by_ds.items():
            if ds != "*" and ds not in datasets:
                raise UserError(f"{where}: hparams.{method}.{ds} is not one of the datasets ({', '.join(datasets)}) nor '*'")
            if "eval_every" in values:
                raise UserError(f"{where}: hparams.{method}.{ds}.eval_every is set by the search (evaluations land on the query milestones); remove it")


def _spaces(raw: Any, methods: list[str], fixed_union: dict[str, dict[str, Any]], where: str) -> dict[str, Space]:
    raw = {} if raw is None else raw  # null: every method's built-in space; "" or [] is a mistake, said below
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
    """Train and validation images of every (dataset, shots, search seed) exist, and checkpoint files
    given as weights; test is never looked at."""
    from benchmark.model.task import load_task_splits
    from benchmark.datasets.task_spec import TaskSpec
    from benchmark.sweep.grid import check_backbone_files

    check_backbone_files(list(cfg.backbones.items()), where)
    for ds in cfg.datasets:
        for k in cfg.shots:
            for seed in cfg.search_seeds:
                try:
                    load_task_splits(TaskSpec(ds, k, seed, cfg.root, eval_test=False))
                except UserError as exc:
                    raise UserError(f"{where}: {exc}") from None


def _check_one_weights_each(grid: Grid, value: Any, where: str) -> None:
    """A study is named by its backbones: one set of weights each."""
    if len({name for name, _ in grid.backbones}) != len(grid.backbones):
        raise UserError(f"{where}: backbones gives {show(value)}: one set of weights per backbone in a search")


def parse_config(raw: Any, path: str, *, check_data: bool = True) -> SearchConfig:
    """Check a loaded YAML mapping; ``path`` names it in errors and gives the default study prefix."""
    where = path
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a tune config must be a YAML mapping with keys {', '.join(KEYS)}")
    unknown = sorted(map(str, set(raw) - set(KEYS)))  # a key may be a number or null in YAML
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise UserError(f"{where}: name must be letters, digits, '.', '_' or '-', got {show(name)}")
    # The grid (methods, datasets, shots, backbones, fixed hyperparameters), read as craft bench
    # reads a sweep's (benchmark.sweep.grid), so that a trial's cells and the exported ones are the
    # bench's cells (``sigma: 1`` is ``1.0`` there too); a search is scored on its search_seeds.
    given = {k: raw[k] for k in ("methods", "datasets", "backbones", "hparams") if k in raw}
    grid = parse_grid({**given, "shots": raw.get("shots", [16]), "search_seeds": raw.get("search_seeds", [1])},
                      where, keys=KEYS, seeds_key="search_seeds")
    methods, datasets = list(grid.methods), list(grid.datasets)
    fixed = [m for m in methods if not METHODS[m].learns]
    if fixed:
        raise UserError(f"{where}: method {fixed[0]} has no hyperparameters to search")
    _check_fixed(raw.get("hparams"), grid.methods, grid.datasets, where)
    _check_one_weights_each(grid, raw.get("backbones"), where)
    out = raw.get("out", os.path.join("results", name))
    if not isinstance(out, str) or not out:
        raise UserError(f"{where}: out must be a folder path or URI, got {show(out)}")
    out = expand_home(out)
    check_location(out)
    root = raw.get("root")
    root = expand_home(root) if isinstance(root, str) else root
    if root is not None and (not isinstance(root, str) or not Path(root).is_dir()):
        raise UserError(f"{where}: root {show(root)} is not a folder (it must hold the dataset folders)")
    hparams = grid.hparams
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
    pool = raw.get("pool")
    pool = [] if pool is None else pool
    if not isinstance(pool, list) or any(p not in POOLABLE for p in pool):
        raise UserError(f"{where}: pool must be a list of {', '.join(POOLABLE)}, got {show(pool)}")
    cfg = SearchConfig(
        path=path, name=name, methods=methods, datasets=datasets, shots=list(grid.shots), backbones=dict(grid.backbones),
        out=out, storage=_storage(raw, out, where), root=root, hparams=hparams, spaces=spaces,
        trials=_int(raw, "trials", 30, 1, where), max_concurrent_trials=_int(raw, "max_concurrent_trials", 2, 1, where),
        sampler=sampler, seed=_sampler_seed(raw, where), pruning=_pruning(raw.get("pruning", True), where),
        warm_start=warm, search_seeds=list(grid.seeds),
        test_seeds=list(dict.fromkeys(check_seeds(raw.get("test_seeds", [1, 2, 3]), "test_seeds", where))),
        pool=list(pool),
    )
    if check_data:
        _check_data(cfg, where)
    return cfg


def load_search_config(path: str, *, check_data: bool = True, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read and check a ``craft tune`` YAML file; ``overrides`` (``craft tune --set``) replace its top-level
    keys before the one check, an unknown one refused naming ``--set``."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} does not exist")
    raw = read_yaml(p, str(path))
    if overrides:
        unknown = sorted(map(str, set(overrides) - set(KEYS)))
        if unknown:
            from benchmark.sweep.grid import unknown as unknown_key

            raise unknown_key(unknown[0], KEYS, "key", "--set")
        raw = {**raw, **overrides} if isinstance(raw, dict) else raw
    return parse_config(raw, str(path), check_data=check_data)
