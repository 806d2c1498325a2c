"""The ``craft bench`` sweep config: YAML in (safe loader), a checked :class:`SweepConfig` out.

A config may ``include:`` others: names of the shipped defaults (``benchmark/configs/<name>.yaml``,
e.g. ``official_craft``) or paths relative to the including file. Includes are merged first,
in order, and the including file overrides them: mappings merge key by key (so ``hparams``
deep-merges), anything else is replaced; ``datasets`` and ``suite`` replace each other. Every
file is checked on its own, so an error names the file it is in and the key path, e.g.
``configs/x.yaml: hparams.craft.dtd: unknown hyperparameter(s) sigmaa``. Relative ``out`` and
``root`` are relative to the current directory, as every ``craft`` option.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from benchmark.config_yaml import read_yaml
from benchmark.errors import UserError, show
from benchmark.serve.options import KEYS as SERVER_KEYS
from benchmark.serve.options import ServerOptions, check_keys

KEYS = {
    "include": "configs merged first: names of benchmark/configs/*.yaml or paths relative to this file",
    "out": "results location: a folder or a pyarrow filesystem URI (s3://bucket/prefix, gs://...)",
    "root": "data root, the folder holding the dataset folders (omit or null for the built-in suite)",
    "methods": "methods to run, e.g. [zero_shot_clip, bbt, craft]",
    "datasets": "dataset keys, e.g. [caltech101, dtd] (or suite:)",
    "suite": "a registry suite instead of datasets: coop11, imagenet_shift, all15, builtin",
    "eval_datasets": "extra test sets scored in a training dataset's label space: {imagenet: [imagenet_v2, ...]}",
    "shots": "shots per class, e.g. [1, 2, 4, 8, 16]",
    "seeds": "few-shot seeds, e.g. [1, 2, 3]",
    "backbones": "backbones as [name:weights, ...] or {name: weights}",
    "hparams": "method -> dataset ('*' = every dataset) -> hyperparameter: value",
    "protocol": "harness (default: every method's defaults) or official (every fidelity switch on the official code's side; docs/fidelity.md)",
    **SERVER_KEYS,
}
MAX_INCLUDE_DEPTH = 32  # files in one include chain (Python's recursion would end a deeper one with a traceback)
# Seeds seed numpy, torch and pycma and are stored as int32 (benchmark/results/schema.py): 0 <= seed < 2**31.
SEED_LIMIT = 2**31
SHOTS_LIMIT = 2**31  # stored as int32
INT_LIMIT = 2**31  # integer hyperparameters (epochs, popsize, budget, ...): |value| < 2**31
BUDGET_LIMIT = 2**53  # stored as int64; any real budget is far below
STEPS_LIMIT = 2**31  # a run's trace counts its generations (steps) as int32


@dataclass(frozen=True)
class SweepConfig:
    """A checked sweep: the lists whose product makes the cells, and where results go."""

    path: str
    out: str
    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    seeds: tuple[int, ...]
    backbones: tuple[tuple[str, str], ...]
    root: str | None = None
    eval_datasets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hparams: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    server: ServerOptions = ServerOptions()
    protocol: str = "harness"
    includes: tuple[str, ...] = ()

    def hparams_for(self, method: str, dataset: str) -> dict[str, Any]:
        """The hyperparameters of ``method`` on ``dataset``: ``'*'`` overridden by the dataset's own."""
        by_ds = self.hparams.get(method, {})
        return {**by_ds.get("*", {}), **by_ds.get(dataset, {})}


def expand_home(path: str) -> str:
    """``~`` and ``~user`` at the start of a local path expanded (a URI is left as it is), as a shell would."""
    return path if "://" in path else os.path.expanduser(path)


def shipped_configs() -> list[str]:
    """Names of the defaults shipped in ``benchmark/configs`` (includable by name)."""
    folder = _shipped_folder()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _shipped_folder() -> Any:
    return resources.files("benchmark").joinpath("configs")


def load_config(path: str | Path) -> SweepConfig:
    """Read ``path`` and its includes, check every file, merge, and check the result."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} does not exist")
    merged, includes = _load_layers(p, str(path), ())
    return _finish(merged, str(path), includes)


def config_from_dict(raw: dict[str, Any], path: str = "<config>", base_dir: str | Path = ".") -> SweepConfig:
    """A config given as a mapping (``path`` names it in errors; includes resolve from ``base_dir``)."""
    merged, includes = _merge_with_includes(raw, path, Path(base_dir), ())
    return _finish(merged, path, includes)


# ----------------------------------------------------------------------------- loading


def _read_yaml(p: Path, where: str) -> dict[str, Any]:
    raw = read_yaml(p, where)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"{where}: a sweep config must be a YAML mapping with keys {', '.join(KEYS)}")
    return raw


def _load_layers(p: Path, where: str, chain: tuple[str, ...]) -> tuple[dict[str, Any], tuple[str, ...]]:
    key = str(p.resolve())
    if key in chain:
        raise UserError(f"{where}: include cycle: {' -> '.join([*chain, key])}")
    if len(chain) >= MAX_INCLUDE_DEPTH:
        raise UserError(f"{where}: includes nest more than {MAX_INCLUDE_DEPTH} files deep ({chain[0]} -> {chain[1]} -> ... "
                        f"-> {key}); merge some of them")
    return _merge_with_includes(_read_yaml(p, where), where, p.parent, (*chain, key))


def _merge_with_includes(
    raw: dict[str, Any], where: str, base_dir: Path, chain: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    _check_layer(raw, where)
    merged: dict[str, Any] = {}
    names: list[str] = []
    for entry in _includes(raw.get("include"), where):
        p, label = _resolve_include(entry, base_dir, where)
        layer, sub = _load_layers(p, label, chain)
        merged = _merge(merged, layer)
        names += [*sub, label]
    own = {k: v for k, v in raw.items() if k != "include"}
    return _merge(merged, own), tuple(names)


def _includes(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: include must be a list of config names or paths, got {show(value)}")
    return value


def _resolve_include(entry: str, base_dir: Path, where: str) -> tuple[Path, str]:
    if entry.endswith((".yaml", ".yml")) or "/" in entry:
        p = Path(entry) if Path(entry).is_absolute() else base_dir / entry
        if not p.is_file():
            raise UserError(f"{where}: include {show(entry)}: no such file {p}")
        return p, str(p)
    shipped = shipped_configs()
    if entry not in shipped:
        raise UserError(
            f"{where}: include {show(entry)} is neither a shipped config ({', '.join(shipped)}) nor a .yaml path"
        )
    return Path(str(_shipped_folder().joinpath(f"{entry}.yaml"))), f"{entry} (benchmark/configs/{entry}.yaml)"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge recursively, other values replace."""
    out = dict(base)
    if "datasets" in over:
        out.pop("suite", None)
    if "suite" in over:
        out.pop("datasets", None)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------- checks of one file


def _unknown(key: str, known: Any, what: str, where: str) -> UserError:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f" (did you mean {show(close[0])}?)" if close else ""
    return UserError(f"{where}: unknown {what} {show(key)}{hint}; known: {', '.join(sorted(map(str, known)))}")


def _int_list(value: Any, key: str, where: str, low: int, limit: int, why: str = "") -> list[int]:
    if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UserError(f"{where}: {key} must be a non-empty list of integers, got {show(value)}")
    bad = [v for v in value if not low <= v < limit]
    if bad:
        raise UserError(f"{where}: {key} must all be >= {low} and < {limit:,}{why}, got {bad[0]}")
    return value


def check_seeds(value: Any, key: str, where: str) -> list[int]:
    """A non-empty list of seeds in 0 <= seed < 2**31 (what numpy and pycma take and the results store as int32)."""
    return _int_list(value, key, where, 0, SEED_LIMIT, " (seeds seed numpy and pycma and are stored as int32)")


def _str_list(value: Any, key: str, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: {key} must be a non-empty list of names, got {show(value)}")
    return value


def _check_dataset(key: Any, where: str, path: str) -> None:
    from benchmark.datasets.registry import get_spec

    try:
        get_spec(str(key))
    except UserError as exc:
        raise UserError(f"{where}: {path}: {exc}") from None


def parse_backbones(value: Any, where: str) -> list[tuple[str, str]]:
    """``[name:weights, ...]`` or ``{name: weights}`` as (name, weights) pairs."""
    if isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()):
        return list(value.items())
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        pairs = []
        for v in value:
            name, sep, weights = v.partition(":")
            if not sep or not name or not weights:
                raise UserError(f"{where}: backbones entry {show(v)} must be name:weights, e.g. RN50:openai or craft-tiny:builtin")
            pairs.append((name, weights))
        if len(set(pairs)) != len(pairs):
            raise UserError(f"{where}: backbones lists {show(value)} with a repeat")
        return pairs
    raise UserError(f"{where}: backbones must be a list of name:weights (e.g. [RN50:openai]) or a mapping name: weights, got {show(value)}")


def _check_layer(raw: dict[str, Any], where: str) -> None:
    """Check the keys and value types of one file (includes not yet merged)."""
    from benchmark.datasets.registry import SUITES
    from craft.methods import METHODS

    for key in raw:
        if key not in KEYS:
            raise _unknown(key, KEYS, "key", where)
    if "out" in raw and (not isinstance(raw["out"], str) or not raw["out"]):
        raise UserError(f"{where}: out must be a folder path or URI, got {show(raw['out'])}")
    if "root" in raw and raw["root"] is not None and (not isinstance(raw["root"], str) or not raw["root"]):
        raise UserError(f"{where}: root must be a folder path or null, got {show(raw['root'])}")
    if "methods" in raw:
        for m in _str_list(raw["methods"], "methods", where):
            if m not in METHODS:
                raise _unknown(m, METHODS, "method", f"{where}: methods")
    if "datasets" in raw:
        from benchmark.datasets.registry import get_spec

        for i, ds in enumerate(_str_list(raw["datasets"], "datasets", where)):
            _check_dataset(ds, where, f"datasets[{i}]")
            spec = get_spec(ds)
            if spec.test_only:
                raise UserError(f"{where}: datasets[{i}]: {ds} is a test set only (no training images); train on "
                                f"{spec.parent} and score it with eval_datasets: {{{spec.parent}: [{ds}]}}")
    if "suite" in raw and raw["suite"] not in SUITES:
        raise _unknown(raw["suite"], SUITES, "suite", where)
    if "datasets" in raw and "suite" in raw:
        raise UserError(f"{where}: give datasets or suite, not both")
    if "shots" in raw:
        _int_list(raw["shots"], "shots", where, 1, SHOTS_LIMIT, " (stored as int32)")
    if "seeds" in raw:
        check_seeds(raw["seeds"], "seeds", where)
    if "backbones" in raw:
        parse_backbones(raw["backbones"], where)
    check_keys(raw, where)
    if "eval_datasets" in raw:
        _check_eval_datasets(raw["eval_datasets"], where)
    if "hparams" in raw:
        _check_hparams(raw["hparams"], where)
    if "protocol" in raw:
        from benchmark.sweep.protocol import PROTOCOLS

        if raw["protocol"] not in PROTOCOLS:
            raise UserError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got {raw['protocol']!r}")


def _check_eval_datasets(value: Any, where: str) -> None:
    from benchmark.datasets.registry import get_spec

    if not isinstance(value, dict):
        raise UserError(f"{where}: eval_datasets must map a training dataset to a list of test sets, got {show(value)}")
    for ds, extra in value.items():
        _check_dataset(ds, where, f"eval_datasets.{ds}")
        for i, key in enumerate(_str_list(extra, f"eval_datasets.{ds}", where)):
            _check_dataset(key, where, f"eval_datasets.{ds}[{i}]")
            spec = get_spec(key)
            if (spec.parent or key) != ds:
                raise UserError(f"{where}: eval_datasets.{ds}[{i}]: {key} is not scored in {ds}'s label space")


def _check_hparams(value: Any, where: str) -> None:
    from craft.methods import METHODS, make_config

    if not isinstance(value, dict):
        raise UserError(f"{where}: hparams must map method -> dataset ('*' = every dataset) -> key: value, got {show(value)}")
    for method, by_ds in value.items():
        if method not in METHODS:
            raise _unknown(method, METHODS, "method", f"{where}: hparams")
        if not isinstance(by_ds, dict):
            raise UserError(f"{where}: hparams.{method} must map dataset ('*' = every dataset) -> key: value, got {show(by_ds)}")
        config_cls = METHODS[method].config_cls
        hints = typing.get_type_hints(config_cls)
        for ds, values in by_ds.items():
            path = f"hparams.{method}.{ds}"
            if ds != "*":
                _check_dataset(ds, where, path)
            if not isinstance(values, dict):
                raise UserError(f"{where}: {path} must map hyperparameter -> value, got {show(values)}")
            for name in values:
                if name not in hints:
                    known = [f.name for f in dataclasses.fields(config_cls)]
                    raise _unknown(name, known, f"{method} hyperparameter", f"{where}: {path}")
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


# ----------------------------------------------------------------------------- the merged config


def _finish(raw: dict[str, Any], where: str, includes: tuple[str, ...]) -> SweepConfig:
    from benchmark.datasets.registry import list_datasets

    for key in ("out", "methods", "shots", "seeds", "backbones"):
        if key not in raw:
            raise UserError(f"{where}: missing key {show(key)} ({KEYS[key]})")
    if "datasets" in raw:
        datasets = list(raw["datasets"])
    elif "suite" in raw:
        datasets = [s.key for s in list_datasets(raw["suite"]) if not s.test_only]
    else:
        raise UserError(f"{where}: missing key 'datasets' (or 'suite'): {KEYS['datasets']}")
    eval_datasets = {ds: tuple(v) for ds, v in (raw.get("eval_datasets") or {}).items()}
    stray = sorted(set(eval_datasets) - set(datasets))
    if stray:
        raise UserError(f"{where}: eval_datasets.{stray[0]}: {stray[0]} is not one of the sweep's datasets")
    protocol = raw.get("protocol", "harness")
    _check_combined_hparams(raw.get("hparams") or {}, datasets, where, protocol)
    cfg = SweepConfig(
        path=where,
        out=expand_home(raw["out"]),
        root=expand_home(raw["root"]) if raw.get("root") else raw.get("root"),
        methods=tuple(dict.fromkeys(raw["methods"])),
        datasets=tuple(dict.fromkeys(datasets)),
        shots=tuple(dict.fromkeys(raw["shots"])),
        seeds=tuple(dict.fromkeys(raw["seeds"])),
        backbones=tuple(parse_backbones(raw["backbones"], where)),
        eval_datasets=eval_datasets,
        hparams={m: {ds: _normalise(m, v) for ds, v in by_ds.items()} for m, by_ds in (raw.get("hparams") or {}).items()},
        server=ServerOptions.from_config(raw, where, official_precision(protocol)),
        protocol=protocol,
        includes=includes,
    )
    check_budgets(cfg)
    return cfg


def check_budgets(cfg: SweepConfig) -> None:
    """Every run's budget buys at least one step of its search and fits the results' int64 column.

    A budget below one CMA-ES generation (or one CBBT estimate) would run no query and be reported
    as if trained; ``budget: 0`` is such a budget, never "the default".
    """
    from benchmark.sweep.cell import Cell
    from craft.budget import one_step
    from craft.methods import make_config

    for method in cfg.methods:
        for ds in cfg.datasets:
            values = cfg.hparams_for(method, ds)
            step = one_step(make_config(method, values, f"hparams.{method} for {ds}"))
            if step is None:
                continue
            for shots in cfg.shots:
                budget = Cell(method, ds, shots, 0, "", "", values).budget()
                given = values.get("budget") is not None
                what = (f"hparams.{method}.budget {budget} (for {ds})" if given
                        else f"{method}'s default budget on {ds} at {shots} shots, {budget} queries,")
                unit = "1 + q, or 1 + 2q two-sided" if method == "cbbt" else "popsize"
                fix = "give budget >= {step}, or leave it unset for the default" if given else f"set hparams.{method}.budget >= {{step}}"
                if budget < step:
                    raise UserError(f"{cfg.path}: {what} is less than one step of {method}'s search, {step} queries "
                                    f"({unit}); {fix.format(step=step)}")
                if budget >= BUDGET_LIMIT:
                    raise UserError(f"{cfg.path}: {what} is not below {BUDGET_LIMIT:,} queries (2**53, what the results store)")
                if budget // step >= STEPS_LIMIT:
                    raise UserError(f"{cfg.path}: {what} buys {budget // step:,} steps of {step} queries; a run's trace "
                                    f"stores its steps as int32, so keep budget / {step} below {STEPS_LIMIT:,}")


def _normalise(method: str, values: dict[str, Any]) -> dict[str, Any]:
    """Integers given for float fields as floats, so that ``sigma: 1`` and ``sigma: 1.0`` make one cell."""
    from craft.methods import METHODS

    hints = typing.get_type_hints(METHODS[method].config_cls)
    out = {}
    for k, v in values.items():
        kinds = set(typing.get_args(hints[k])) if typing.get_origin(hints[k]) in (typing.Union, types.UnionType) else {hints[k]}
        takes_float = float in kinds and int not in kinds
        out[k] = float(v) if takes_float and isinstance(v, int) and not isinstance(v, bool) else v
    return out


def official_precision(protocol: str) -> str:
    """The servers' precision when a config names none: fp32 under the official protocol (the
    official code's text encoder runs in fp32), else auto."""
    from benchmark.sweep.protocol import OFFICIAL

    return "fp32" if protocol == OFFICIAL else "auto"


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
