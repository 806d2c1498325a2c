"""The grid of a ``craft bench`` sweep and of a ``craft tune`` search, parsed and checked in one place.

A grid is methods x datasets x shots x seeds x backbones, with hyperparameters per method and
dataset (``'*'``: every dataset). Both commands' configs read their grid keys here
(:func:`check_grid` for the keys one file gives, :func:`make_grid` for the whole), so that both
take the same values and refuse the same mistakes with the same sentence, each naming the file and
the key, before Ray starts: unknown methods and datasets, test-only datasets (they have no
training images), backbones unknown to open_clip (or ``weights: builtin`` for another than the
built-in model), hyperparameters a method does not take or whose values it refuses, and budgets
that buy not even one step of a method's search. Backbones are kept in open_clip's spelling
(:func:`benchmark.results.backbones.open_clip_name`); integers given for float hyperparameters
become floats, so that ``sigma: 1`` and ``sigma: 1.0`` make one cell.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.errors import UserError, show
from benchmark.results.backbones import open_clip_name

# Seeds seed numpy, torch and pycma and are stored as int32 (benchmark/results/schema.py): 0 <= seed < 2**31.
SEED_LIMIT = 2**31
SHOTS_LIMIT = 2**31  # stored as int32
INT_LIMIT = 2**31  # integer hyperparameters (epochs, popsize, budget, ...): |value| < 2**31
BUDGET_LIMIT = 2**53  # stored as int64; any real budget is far below
STEPS_LIMIT = 2**31  # a run's trace counts its generations (steps) as int32

# What each grid key holds, for "missing key" sentences; a config's own KEYS may say more.
GRID_KEYS = {
    "methods": "methods to run, e.g. [zero_shot_clip, bbt, craft]",
    "datasets": "dataset keys, e.g. [caltech101, dtd]",
    "shots": "shots per class, e.g. [1, 2, 4, 8, 16]",
    "seeds": "few-shot seeds, e.g. [1, 2, 3]",
    "backbones": "backbones as [name:weights, ...] or {name: weights}",
    "hparams": "method -> dataset ('*' = every dataset) -> hyperparameter: value",
}


@dataclass(frozen=True)
class Grid:
    """A checked grid: the lists whose product makes the runs, and their hyperparameters.

    ``hparams`` holds what the config gives (normalised); :meth:`cell_hparams` puts the protocol's
    method settings beneath it, as every cell of the grid gets them.
    """

    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    backbones: tuple[tuple[str, str], ...]  # (open_clip name, weights)
    hparams: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    protocol: str = "harness"

    def hparams_for(self, method: str, dataset: str) -> dict[str, Any]:
        """The hyperparameters of ``method`` on ``dataset``: ``'*'`` overridden by the dataset's own."""
        return hparams_for(self.hparams, method, dataset)

    def cell_hparams(self, method: str, dataset: str) -> dict[str, Any]:
        """A cell's hyperparameters: the protocol's for ``method`` beneath :meth:`hparams_for`."""
        from benchmark.sweep.protocol import protocol_hparams

        return {**protocol_hparams(self.protocol, method), **self.hparams_for(method, dataset)}


def hparams_for(hparams: dict[str, dict[str, dict[str, Any]]], method: str, dataset: str) -> dict[str, Any]:
    """``hparams[method]['*']`` overridden by ``hparams[method][dataset]``."""
    by_ds = hparams.get(method, {})
    return {**by_ds.get("*", {}), **by_ds.get(dataset, {})}


# ----------------------------------------------------------------------------- one file's grid keys


def check_grid(raw: dict[str, Any], where: str, seeds_key: str = "seeds") -> None:
    """Check the grid keys that ``raw`` (one config file) gives; keys it lacks are not checked here."""
    if "methods" in raw:
        check_methods(raw["methods"], where)
    if "datasets" in raw:
        check_datasets(raw["datasets"], where)
    if "suite" in raw:
        suite_datasets(raw["suite"], where)
    if "datasets" in raw and "suite" in raw:
        raise UserError(f"{where}: give datasets or suite, not both")
    if "shots" in raw:
        check_shots(raw["shots"], "shots", where)
    if seeds_key in raw:
        check_seeds(raw[seeds_key], seeds_key, where)
    if "backbones" in raw:
        parse_backbones(raw["backbones"], where)
    if "hparams" in raw:
        check_hparams(raw["hparams"], where)


def unknown(key: Any, known: Any, what: str, where: str) -> UserError:
    """``where: unknown <what> 'key' (did you mean ...?); known: ...``."""
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {show(close[0])}?)" if close else ""
    return UserError(f"{where}: unknown {what} {show(key)}{hint}; known: {', '.join(sorted(map(str, known)))}")


def _as_list(value: Any) -> Any:
    """A single name or number given where a list is expected, as a list of one."""
    return [value] if isinstance(value, (str, int)) and not isinstance(value, bool) else value


def _int_list(value: Any, key: str, where: str, low: int, limit: int, why: str = "") -> list[int]:
    value = _as_list(value)
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{where}: {key} must be a non-empty list of integers, got {show(value)}")
    bad = [v for v in value if not low <= v < limit]
    if bad:
        raise UserError(f"{where}: {key} must all be >= {low} and < {limit:,}{why}, got {bad[0]}")
    return value


def _str_list(value: Any, key: str, where: str) -> list[str]:
    value = _as_list(value)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: {key} must be a non-empty list of names, got {show(value)}")
    return value


def check_methods(value: Any, where: str, key: str = "methods") -> list[str]:
    """A non-empty list of method names, each one of :data:`craft.methods.METHODS`."""
    from craft.methods import METHODS

    names = _str_list(value, key, where)
    for m in names:
        if m not in METHODS:
            raise unknown(m, METHODS, "method", f"{where}: {key}")
    return names


def check_dataset(key: Any, where: str, path: str) -> None:
    """``key`` is a dataset of the registry; the error names ``where`` and the key path ``path``."""
    from benchmark.datasets.registry import get_spec

    try:
        get_spec(str(key))
    except UserError as exc:
        raise UserError(f"{where}: {path}: {exc}") from None


def check_datasets(value: Any, where: str, key: str = "datasets") -> list[str]:
    """A non-empty list of registry datasets to train on: a test-only set (an ImageNet variant) is refused."""
    from benchmark.datasets.registry import get_spec

    names = _str_list(value, key, where)
    for i, ds in enumerate(names):
        check_dataset(ds, where, f"{key}[{i}]")
        spec = get_spec(ds)
        if spec.test_only:
            raise UserError(f"{where}: {key}[{i}]: {ds} is a test set only (no training images); train on "
                            f"{spec.parent} and score it with eval_datasets: {{{spec.parent}: [{ds}]}}")
    return names


def suite_datasets(suite: Any, where: str) -> list[str]:
    """The datasets of a registry suite that have training images (its test-only sets are left out)."""
    from benchmark.datasets.registry import SUITES, list_datasets

    if suite not in SUITES:
        raise unknown(suite, SUITES, "suite", where)
    return [s.key for s in list_datasets(suite) if not s.test_only]


def check_shots(value: Any, key: str, where: str) -> list[int]:
    """A non-empty list of shots in 1 <= shots < 2**31 (the results store them as int32)."""
    return _int_list(value, key, where, 1, SHOTS_LIMIT, " (stored as int32)")


def check_seeds(value: Any, key: str, where: str) -> list[int]:
    """A non-empty list of seeds in 0 <= seed < 2**31 (what numpy and pycma take and the results store as int32)."""
    return _int_list(value, key, where, 0, SEED_LIMIT, " (seeds seed numpy and pycma and are stored as int32)")


def parse_backbones(value: Any, where: str) -> list[tuple[str, str]]:
    """``[name:weights, ...]`` or ``{name: weights}`` as (open_clip name, weights) pairs, each name known.

    The paper's spelling is taken (``ViT-B/32`` is open_clip's ``ViT-B-32``); a name that neither
    open_clip nor the built-in model has, or ``builtin`` weights for another model, is refused.
    """
    if isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        pairs = [(open_clip_name(k), v) for k, v in value.items()]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        pairs = []
        for v in value:
            name, sep, weights = v.partition(":")
            if not sep or not name or not weights:
                raise UserError(f"{where}: backbones entry {show(v)} must be name:weights, e.g. RN50:openai or craft-tiny:builtin")
            pairs.append((open_clip_name(name), weights))
    else:
        raise UserError(f"{where}: backbones must be a list of name:weights (e.g. [RN50:openai]) or a mapping name: weights, got {show(value)}")
    if len(set(pairs)) != len(pairs):
        raise UserError(f"{where}: backbones lists {show(value)} with a repeat")
    check_backbone_names(pairs, where)
    return pairs


def check_backbone_names(pairs: list[tuple[str, str]], where: str) -> None:
    """Every name is open_clip's or the built-in model's; ``builtin`` weights only for the built-in model."""
    from benchmark.model.builtin import BUILTIN_BACKBONE

    known = _known_backbones()
    for name, weights in pairs:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {show(close[0])}?)" if close else ""
            raise UserError(f"{where}: backbones: unknown backbone {show(name)}{hint} (any name from "
                            f"open_clip.list_models(), or {BUILTIN_BACKBONE})")
        if weights == "builtin" and name != BUILTIN_BACKBONE:
            raise UserError(f"{where}: backbones: weights 'builtin' exist only for {BUILTIN_BACKBONE}, not {name}")


@functools.cache
def _known_backbones() -> tuple[str, ...]:
    from benchmark.model.loading import known_backbones

    return tuple(known_backbones())


def check_backbone_files(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]], where: str) -> None:
    """Weights exist before Ray starts: a checkpoint path (a ``/`` or a checkpoint suffix) is a file,
    a pretrained tag is one open_clip knows for its backbone (open_clip is imported only for tags)."""
    from benchmark.model.loading import BUILTIN, RANDOM

    tags = []
    for name, weights in pairs:
        if "/" in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors")):
            if not Path(weights).is_file():
                raise UserError(f"{where}: checkpoint {weights} (weights of {name}) does not exist")
        elif weights not in (BUILTIN, RANDOM):
            tags.append((name, weights))
    if tags:
        import open_clip

        for name, tag in tags:
            known = open_clip.list_pretrained_tags_by_model(name)
            if tag not in known:
                raise UserError(f"{where}: backbones: {name} has no pretrained tag {tag!r}; its tags: "
                                f"{', '.join(known) or 'none'} (or give a checkpoint path, or random)")


def check_hparams(value: Any, where: str) -> None:
    """``method -> dataset ('*' = every dataset) -> hyperparameter: value``: every name, type and value."""
    from craft.methods import METHODS, make_config

    if not isinstance(value, dict):
        raise UserError(f"{where}: hparams must map method -> dataset ('*' = every dataset) -> key: value, got {show(value)}")
    for method, by_ds in value.items():
        if method not in METHODS:
            raise unknown(method, METHODS, "method", f"{where}: hparams")
        if not isinstance(by_ds, dict):
            raise UserError(f"{where}: hparams.{method} must map dataset ('*' = every dataset) -> key: value, got {show(by_ds)}")
        config_cls = METHODS[method].config_cls
        hints = typing.get_type_hints(config_cls)
        for ds, values in by_ds.items():
            path = f"hparams.{method}.{ds}"
            if ds != "*":
                check_dataset(ds, where, path)
            if not isinstance(values, dict):
                raise UserError(f"{where}: {path} must map hyperparameter -> value, got {show(values)}")
            for name in values:
                if name not in hints:
                    known = [f.name for f in dataclasses.fields(config_cls)]
                    raise unknown(name, known, f"{method} hyperparameter", f"{where}: {path}")
                if not _fits(values[name], hints[name]):
                    raise UserError(
                        f"{where}: {path}.{name} must be {_type_name(hints[name])}, got {show(values[name])}"
                    )
                v = values[name]
                if isinstance(v, int) and not isinstance(v, bool) and not -INT_LIMIT <= v < INT_LIMIT:
                    raise UserError(f"{where}: {path}.{name} must lie in -2**31 <= {name} < 2**31 "
                                    f"(counts and steps are stored as int32), got {v}")
            try:
                make_config(method, values, path)
            except (ValueError, TypeError) as exc:
                raise UserError(f"{where}: {path}: {exc}") from None


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a config field's annotation (ints are floats; bools are not ints)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        return isinstance(value, list)
    return True  # a type this check does not know: the method validates it


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


# ----------------------------------------------------------------------------- the whole grid


def make_grid(raw: dict[str, Any], where: str, *, protocol: str = "harness", keys: dict[str, str] | None = None,
              seeds_key: str = "seeds") -> Grid:
    """The grid of a config whose files each passed :func:`check_grid` (includes merged).

    Missing keys are named with ``keys``' descriptions; repeats in a list count once; every
    (method, dataset) setting, the protocol's beneath the config's, builds the method's config;
    every run's budget buys at least one step of its search.
    """
    keys = {**GRID_KEYS, **(keys or {})}
    for key in ("methods", "shots", seeds_key, "backbones"):
        if key not in raw:
            raise UserError(f"{where}: missing key {show(key)} ({keys[key]})")
    if "datasets" in raw:
        datasets = _str_list(raw["datasets"], "datasets", where)
    elif "suite" in raw:
        datasets = suite_datasets(raw["suite"], where)
    else:
        raise UserError(f"{where}: missing key 'datasets' (or 'suite'): {keys['datasets']}")
    hparams = raw.get("hparams") or {}
    _check_combined_hparams(hparams, datasets, where, protocol)
    grid = Grid(
        methods=tuple(dict.fromkeys(_str_list(raw["methods"], "methods", where))),
        datasets=tuple(dict.fromkeys(datasets)),
        shots=tuple(dict.fromkeys(_as_list(raw["shots"]))),
        seeds=tuple(dict.fromkeys(_as_list(raw[seeds_key]))),
        backbones=tuple(parse_backbones(raw["backbones"], where)),
        hparams={m: {ds: normalise_hparams(m, v) for ds, v in by_ds.items()} for m, by_ds in hparams.items()},
        protocol=protocol,
    )
    check_budgets(grid, where)
    return grid


def parse_grid(raw: dict[str, Any], where: str, **kw: Any) -> Grid:
    """:func:`check_grid` and :func:`make_grid` of one config file's mapping."""
    check_grid(raw, where, kw.get("seeds_key", "seeds"))
    return make_grid(raw, where, **kw)


def normalise_hparams(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """Integers given for float fields as floats, so that ``sigma: 1`` and ``sigma: 1.0`` make one cell."""
    from craft.methods import METHODS

    hints = typing.get_type_hints(METHODS[method].config_cls)
    out = {}
    for k, v in values.items():
        kinds = set(typing.get_args(hints[k])) if typing.get_origin(hints[k]) in (typing.Union, types.UnionType) else {hints[k]}
        takes_float = float in kinds and int not in kinds
        out[k] = float(v) if takes_float and isinstance(v, int) and not isinstance(v, bool) else v
    return out


def _check_combined_hparams(hparams: dict[str, Any], datasets: list[str], where: str, protocol: str) -> None:
    """Every (method, dataset) setting, the protocol's beneath '*' and the dataset's own, builds a config."""
    from benchmark.sweep.protocol import protocol_hparams
    from craft.methods import make_config

    for method, by_ds in hparams.items():
        for ds in datasets:
            values = {**protocol_hparams(protocol, method), **by_ds.get("*", {}), **by_ds.get(ds, {})}
            try:
                make_config(method, values, f"hparams.{method} for {ds}")
            except (ValueError, TypeError) as exc:
                raise UserError(f"{where}: hparams.{method} for {ds} ('*' and its own): {exc}") from None


def check_budgets(grid: Grid, where: str) -> None:
    """Every run's budget buys at least one step of its search and fits the results' int64 column.

    A budget below one CMA-ES generation (or one CBBT estimate) would run no query and be reported
    as if trained; ``budget: 0`` is such a budget, never "the default".
    """
    from benchmark.datasets.registry import get_spec
    from craft.budget import one_step
    from craft.methods.base import run_budget
    from craft.methods import get_method, make_config

    for method in grid.methods:
        for ds in grid.datasets:
            values = grid.hparams_for(method, ds)
            config = make_config(method, values, f"hparams.{method} for {ds}")
            step = one_step(config)
            if step is None:
                continue
            for shots in grid.shots:
                budget = run_budget(get_method(method), config, shots, ds, get_spec(ds).classes)
                given = values.get("budget") is not None
                what = (f"hparams.{method}.budget {budget} (for {ds})" if given
                        else f"{method}'s default budget on {ds} at {shots} shots, {budget} queries,")
                unit = {"cbbt": "1 + q, or 1 + 2q two-sided", "blackvip": "2 sp_avg"}.get(method, "popsize")
                fix = "give budget >= {step}, or leave it unset for the default" if given else f"set hparams.{method}.budget >= {{step}}"
                if budget < step:
                    raise UserError(f"{where}: {what} is less than one step of {method}'s search, {step} queries "
                                    f"({unit}); {fix.format(step=step)}")
                if budget >= BUDGET_LIMIT:
                    raise UserError(f"{where}: {what} is not below {BUDGET_LIMIT:,} queries (2**53, what the results store)")
                if budget // step >= STEPS_LIMIT:
                    raise UserError(f"{where}: {what} buys {budget // step:,} steps of {step} queries; a run's trace "
                                    f"stores its steps as int32, so keep budget / {step} below {STEPS_LIMIT:,}")
