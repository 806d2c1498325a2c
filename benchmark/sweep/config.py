"""The ``craft bench`` sweep config: YAML in (safe loader), a checked :class:`SweepConfig` out.

A config may ``include:`` others: names of the shipped defaults (``benchmark/configs/<name>.yaml``,
e.g. ``official_craft``) or paths relative to the including file. Includes are merged first,
in order, and the including file overrides them: mappings merge key by key (so ``hparams``
deep-merges), anything else is replaced; ``datasets`` and ``suite`` replace each other. Every
file is checked on its own, so an error names the file it is in and the key path, e.g.
``configs/x.yaml: hparams.craft.dtd: unknown craft hyperparameter 'sigmaa'``. The grid keys
(methods, datasets or suite, shots, seeds, backbones, hparams) are read by :mod:`benchmark.sweep.grid`,
as ``craft tune``'s are. Relative ``out`` and ``root`` are relative to the current directory, as
every ``craft`` option.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from benchmark.config_yaml import read_yaml
from benchmark.errors import UserError, show
from benchmark.serve.options import KEYS as SERVER_KEYS
from benchmark.serve.options import ServerOptions, check_keys
from benchmark.sweep.grid import Grid, check_dataset, check_grid, hparams_for, make_grid, unknown

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
    "weights": "where the backbones' weights are: a folder or URI holding craft weights fetch --dir's manifest.json",
    "protocol": "harness (default: every method's defaults) or official (every fidelity switch on the official code's side; docs/fidelity.md)",
    **SERVER_KEYS,
}
MAX_INCLUDE_DEPTH = 32  # files in one include chain (Python's recursion would end a deeper one with a traceback)


@dataclass(frozen=True, kw_only=True)
class SweepConfig(Grid):
    """A checked sweep: its grid (whose product makes the cells), where results go, the data root,
    the extra test sets, and how its servers serve."""

    path: str
    out: str
    root: str | None = None
    weights: str | None = None  # a folder or URI with a weights manifest (benchmark.model.weights)
    eval_datasets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    server: ServerOptions = ServerOptions()
    includes: tuple[str, ...] = ()

    @property
    def grid(self) -> Grid:
        """The sweep's grid (:mod:`benchmark.sweep.grid`): methods x datasets x shots x seeds x backbones."""
        return self


def expand_home(path: str) -> str:
    """``~`` and ``~user`` at the start of a local path expanded (a URI is left as it is), as a shell would."""
    return path if "://" in path else os.path.expanduser(path)


def shipped_configs() -> list[str]:
    """Names of the defaults shipped in ``benchmark/configs`` (includable by name)."""
    folder = _shipped_folder()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _shipped_folder() -> Any:
    return resources.files("benchmark").joinpath("configs")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SweepConfig:
    """Read ``path`` and its includes, check every file, merge, and check the result.

    ``overrides`` (``craft bench --set``, :func:`benchmark.config_yaml.parse_overrides`) are one more
    layer over the file, checked as a file is (errors name ``--set``): one validation path for both.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path} does not exist")
    merged, includes = _load_layers(p, str(path), ())
    if overrides:
        _check_layer(overrides, "--set")
        merged = _merge(merged, overrides)
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


def _check_layer(raw: dict[str, Any], where: str) -> None:
    """Check the keys and value types of one file (includes not yet merged)."""
    for key in raw:
        if key not in KEYS:
            raise unknown(key, KEYS, "key", where)
    if "out" in raw and (not isinstance(raw["out"], str) or not raw["out"]):
        raise UserError(f"{where}: out must be a folder path or URI, got {show(raw['out'])}")
    if "root" in raw and raw["root"] is not None and (not isinstance(raw["root"], str) or not raw["root"]):
        raise UserError(f"{where}: root must be a folder path or null, got {show(raw['root'])}")
    if "weights" in raw and raw["weights"] is not None and (not isinstance(raw["weights"], str) or not raw["weights"]):
        raise UserError(f"{where}: weights must be a folder path or URI holding a weights manifest, or null, got {show(raw['weights'])}")
    check_grid(raw, where)  # methods, datasets or suite, shots, seeds, backbones, hparams
    check_keys(raw, where)
    if "eval_datasets" in raw:
        _check_eval_datasets(raw["eval_datasets"], where)
    if "protocol" in raw:
        from benchmark.sweep.protocol import PROTOCOLS

        if raw["protocol"] not in PROTOCOLS:
            raise UserError(f"{where}: protocol must be one of {', '.join(PROTOCOLS)}, got {raw['protocol']!r}")


def _check_eval_datasets(value: Any, where: str) -> None:
    from benchmark.datasets.registry import scored_in

    if not isinstance(value, dict):
        raise UserError(f"{where}: eval_datasets must map a training dataset to a list of test sets, got {show(value)}")
    for ds, extra in value.items():
        check_dataset(ds, where, f"eval_datasets.{ds}")
        if not isinstance(extra, list) or not extra or not all(isinstance(v, str) and v for v in extra):
            raise UserError(f"{where}: eval_datasets.{ds} must be a non-empty list of names, got {show(extra)}")
        for i, key in enumerate(extra):
            check_dataset(key, where, f"eval_datasets.{ds}[{i}]")
            if not scored_in(key, ds):
                raise UserError(f"{where}: eval_datasets.{ds}[{i}]: {key} is not scored in {ds}'s label space")


# ----------------------------------------------------------------------------- the merged config


def _finish(raw: dict[str, Any], where: str, includes: tuple[str, ...]) -> SweepConfig:
    if "out" not in raw:
        raise UserError(f"{where}: missing key 'out' ({KEYS['out']})")
    protocol = raw.get("protocol", "harness")
    grid = make_grid(raw, where, protocol=protocol, keys=KEYS)
    eval_datasets = {ds: tuple(v) for ds, v in (raw.get("eval_datasets") or {}).items()}
    stray = sorted(set(eval_datasets) - set(grid.datasets))
    if stray:
        raise UserError(f"{where}: eval_datasets.{stray[0]}: {stray[0]} is not one of the sweep's datasets")
    return SweepConfig(
        path=where,
        out=expand_home(raw["out"]),
        root=expand_home(raw["root"]) if raw.get("root") else raw.get("root"),
        weights=expand_home(raw["weights"]) if raw.get("weights") else None,
        **{f.name: getattr(grid, f.name) for f in fields(Grid)},
        eval_datasets=eval_datasets,
        server=ServerOptions.from_config(raw, where, official_precision(protocol)),
        includes=includes,
    )


def official_precision(protocol: str) -> str:
    """The servers' precision when a config names none: fp32 under the official protocol (the
    official code's text encoder runs in fp32), else auto."""
    from benchmark.sweep.protocol import OFFICIAL

    return "fp32" if protocol == OFFICIAL else "auto"
