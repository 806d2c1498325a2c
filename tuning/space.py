"""Search spaces: YAML declarations of a method's hyperparameters, checked, then sampled by Optuna.

A space maps parameter names to specs, in order::

    sigma: {type: float, low: 0.01, high: 2.0, log: true}
    n:     {type: int, low: 1, high: 8, step: 1}
    bound: {type: categorical, choices: [0, 5]}
    lr:    {type: float, low: 1.0e-4, high: 1.0e-2, log: true, when: {bound: 5}}

``when`` makes a parameter conditional on parameters declared before it: ``{p: value}`` (equal),
``{p: [v1, v2]}`` (one of), ``{p: {gt|ge|lt|le|ne: x}}``; a parameter whose ``when`` fails is not
sampled (the method's default applies). Every name must be a hyperparameter of the method
(checked with :func:`craft.methods.make_config`); every range must be possible.
"""

from __future__ import annotations

import json
import math
import operator
from dataclasses import dataclass, field
from typing import Any

from benchmark.errors import UserError
from craft.methods import METHODS, make_config

TYPES = ("float", "int", "categorical")
OPS = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}
KEYS = {"float": {"type", "low", "high", "log", "step", "when"}, "int": {"type", "low", "high", "log", "step", "when"},
        "categorical": {"type", "choices", "when"}}
# Set by the search itself, never searched: the budget fixes the query milestones, eval_every lands
# evaluations on them, popsize sets how queries grow per generation.
RESERVED = {"budget": "the query budget is fixed per study (set it under hparams)",
            "eval_every": "the search sets eval_every so that evaluations land on the query milestones",
            "popsize": "popsize sets the query milestones of pruning; fix it under hparams"}

# Defaults per method, used when the config declares no space for it. CraFT: the paper's knobs
# (perturbation scale, projection scale, box bound, refinement learning rate, both loss weights,
# the KL window n); ranges bracket the official per-dataset values (sigma 0.02..1, std 0.2..1,
# weight 0..1, n 1..4). The CBBT space activates once a method called "cbbt" is registered.
DEFAULT_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "craft": {
        "sigma": {"type": "float", "low": 0.01, "high": 2.0, "log": True},
        "std": {"type": "float", "low": 0.05, "high": 2.0, "log": True},
        "bound": {"type": "categorical", "choices": [0.0, 2.0, 5.0, 10.0]},
        "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
        "lambda_i": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "lambda_o": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "n": {"type": "categorical", "choices": [1, 2, 4, 8]},
    },
    "bbt": {
        "sigma": {"type": "float", "low": 0.01, "high": 2.0, "log": True},
        "std": {"type": "float", "low": 0.05, "high": 2.0, "log": True},
        "bound": {"type": "categorical", "choices": [0.0, 2.0, 5.0, 10.0]},
    },
    "cbbt": {
        "mu": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "q": {"type": "int", "low": 4, "high": 256, "log": True},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    },
}


@dataclass(frozen=True)
class Condition:
    """``parent <op> value``, or ``parent in values`` when ``op`` is ``in``."""

    parent: str
    op: str
    value: Any

    def holds(self, chosen: dict[str, Any]) -> bool:
        if self.parent not in chosen:  # the parent was itself left out by its condition
            return False
        v = chosen[self.parent]
        return v in self.value if self.op == "in" else bool(OPS[self.op](v, self.value))


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    when: tuple[Condition, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, self.low, self.high, log=self.log, step=self.step or 1)
        return trial.suggest_categorical(self.name, list(self.choices))

    def coerce(self, value: Any) -> Any | None:
        """``value`` as this parameter would take it (a categorical's own choice), None if outside."""
        if self.type == "categorical":
            for c in self.choices:
                if isinstance(c, bool) == isinstance(value, bool) and c == value:
                    return c
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value is None:
            return None
        if not self.low <= value <= self.high:
            return None
        if self.type == "int":
            return int(value) if float(value).is_integer() else None
        return float(value)

    def endpoints(self) -> list[Any]:
        return list(self.choices) if self.type == "categorical" else [self.low, self.high]


@dataclass(frozen=True)
class Space:
    """A method's search space: parameters in declaration order."""

    method: str
    params: tuple[Param, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run sampling: each parameter whose conditions hold, in order."""
        chosen: dict[str, Any] = {}
        for p in self.params:
            if all(c.holds(chosen) for c in p.when):
                chosen[p.name] = p.suggest(trial)
        return chosen

    def project(self, values: dict[str, Any]) -> dict[str, Any]:
        """The part of ``values`` this space can take: known, in range, conditions met."""
        chosen: dict[str, Any] = {}
        for p in self.params:
            if p.name in values and all(c.holds(chosen) for c in p.when):
                v = p.coerce(values[p.name])
                if v is not None:
                    chosen[p.name] = v
        return chosen

    def fingerprint(self) -> str:
        """A canonical text of the space (part of the study's identity)."""
        return json.dumps([[p.name, p.type, p.low, p.high, p.log, p.step, list(p.choices),
                            [[c.parent, c.op, c.value] for c in p.when]] for p in self.params], default=str)


def _number(value: Any, where: str, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: {what} must be a finite number, got {value!r}")
    return value


def _condition(parent: str, rule: Any, declared: dict[str, Param], where: str) -> Condition:
    if parent not in declared:
        before = ", ".join(declared) or "none"
        raise UserError(f"{where}: 'when' refers to {parent!r}, which is not declared before it (declared: {before})")
    if isinstance(rule, list):
        if not rule:
            raise UserError(f"{where}: 'when' {parent} lists no values")
        return Condition(parent, "in", tuple(rule))
    if isinstance(rule, dict):
        if len(rule) != 1 or next(iter(rule)) not in OPS:
            raise UserError(f"{where}: 'when' {parent} must be a value, a list, or one of {{{', '.join(OPS)}: x}}, got {rule!r}")
        op, value = next(iter(rule.items()))
        return Condition(parent, op, value)
    return Condition(parent, "eq", rule)


def parse_param(name: str, spec: Any, declared: dict[str, Param], where: str) -> Param:
    """One parameter spec, checked: its type, keys, range and conditions."""
    where = f"{where}.{name}"
    if not isinstance(spec, dict):
        raise UserError(f"{where} must be a mapping like {{type: float, low: 0.01, high: 1, log: true}}, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise UserError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    unknown = sorted(set(spec) - KEYS[kind])
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)} for a {kind} parameter; allowed: {', '.join(sorted(KEYS[kind]))}")
    when = spec.get("when") or {}
    if not isinstance(when, dict):
        raise UserError(f"{where}: 'when' must be a mapping {{parameter: value}}, got {when!r}")
    conditions = tuple(_condition(parent, rule, declared, where) for parent, rule in when.items())
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if any(not isinstance(c, (bool, int, float, str)) and c is not None for c in choices):
            raise UserError(f"{where}: choices must be numbers, strings, booleans or null, got {choices!r}")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise UserError(f"{where}: choices {choices!r} repeat a value")
        return Param(name, kind, choices=tuple(choices), when=conditions)
    for key in ("low", "high"):
        if key not in spec:
            raise UserError(f"{where}: a {kind} parameter needs low and high")
    low, high = _number(spec["low"], where, "low"), _number(spec["high"], where, "high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if kind == "int":
        for key, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and not float(v).is_integer():
                raise UserError(f"{where}: an int parameter needs whole numbers, got {key}={v!r}")
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    else:
        low, high = float(low), float(high)
    if low >= high:
        raise UserError(f"{where}: low ({low}) must be below high ({high}); fix a constant under hparams instead")
    if log and low <= 0:
        raise UserError(f"{where}: a log-scale range must be above 0, got low={low}")
    if step is not None:
        step = _number(step, where, "step")
        if step <= 0:
            raise UserError(f"{where}: step must be positive, got {step}")
        if log:
            raise UserError(f"{where}: step and log cannot be combined (Optuna samples one or the other)")
    return Param(name, kind, low, high, log, step, when=conditions)


def parse_space(method: str, raw: Any, where: str, fixed: dict[str, Any] | None = None) -> Space:
    """The space of ``method`` from its YAML mapping; names and endpoint values checked against the method."""
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where} must map hyperparameter names to specs, got {raw!r}")
    declared: dict[str, Param] = {}
    for name, spec in raw.items():
        if name in RESERVED:
            raise UserError(f"{where}.{name} cannot be searched: {RESERVED[name]}")
        if fixed and name in fixed:
            raise UserError(f"{where}.{name} is both fixed under hparams and searched; keep one")
        declared[name] = parse_param(str(name), spec, declared, where)
    space = Space(method, tuple(declared.values()))
    check_against_method(space, where, fixed or {})
    return space


def check_against_method(space: Space, where: str, fixed: dict[str, Any]) -> None:
    """Every name must be a hyperparameter of the method, and every endpoint a value it accepts."""
    for p in space.params:
        for value in p.endpoints():
            try:
                make_config(space.method, {**fixed, p.name: value}, where)
            except UserError:
                raise
            except (ValueError, TypeError) as exc:
                msg = str(exc).rstrip(".")
                if "unknown hyperparameter" in msg:  # make_config lists what the method accepts after "; "
                    raise UserError(f"{where}.{p.name}: not a hyperparameter of {space.method}; {msg.split('; ', 1)[-1]}") from None
                raise UserError(f"{where}.{p.name}: value {value!r} is not accepted by {space.method}: {msg}") from None


def default_space(method: str, fixed: dict[str, Any] | None = None) -> Space:
    """The built-in space of ``method`` (a UserError if it has none or the method is not registered)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; known methods: {', '.join(sorted(METHODS))}")
    if method not in DEFAULT_SPACES:
        raise UserError(f"method {method} has no default search space; declare one under space.{method}")
    raw = {k: v for k, v in DEFAULT_SPACES[method].items() if k not in (fixed or {})}
    if not raw:
        raise UserError(f"every parameter of the default {method} space is fixed under hparams; nothing left to search")
    return parse_space(method, raw, f"default space of {method}", fixed)
