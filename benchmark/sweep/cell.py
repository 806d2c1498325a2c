"""A cell: one run of one method on one dataset, shots, seed, backbone and hyperparameters."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from benchmark.datasets.registry import get_spec
from benchmark.sweep.protocol import HARNESS, protocol_train_aug
from craft.methods.base import run_budget
from craft.methods import METHODS, get_method, make_config


@dataclass(frozen=True)
class Cell:
    """Everything that defines a run. ``cell_id`` hashes all of it except where the data lives.

    The method's typed config (``config``: every hyperparameter, defaults filled in), the id and
    the budget are made once, when the cell is; the config is frozen (:func:`frozen_config`), so
    none of them can drift from the others. ``hparams`` keeps what was given, as the model servers take it.
    """

    method: str
    dataset: str
    shots: int
    seed: int
    backbone: str
    weights: str
    hparams: dict[str, Any] = field(default_factory=dict, hash=False)
    eval_datasets: tuple[str, ...] = ()
    root: str | None = field(default=None, compare=False)
    protocol: str = HARNESS  # benchmark.sweep.protocol; its method hparams are already in ``hparams``
    precision: str | None = None  # the servers' precision where a config asks another than its protocol's default
    if TYPE_CHECKING:  # set once by __post_init__; not fields, so that asdict(cell) is what defines the cell
        config: Any  # the method's frozen, typed config
        cell_id: str
        _budget: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", frozen_config(self.method, self.hparams, f"cell {self.method}/{self.dataset}"))
        object.__setattr__(self, "cell_id", self._id())
        object.__setattr__(self, "_budget", run_budget(get_method(self.method), self.config, self.shots, self.dataset,
                                                       get_spec(self.dataset).classes, self.backbone))

    def _id(self) -> str:
        """The hash of the cell's definition; ids of cells from before protocols (and train_aug, and precision)
        stay as they were: each enters the hash only where it is not its default."""
        d: dict[str, Any] = {
            "method": self.method, "dataset": self.dataset, "shots": self.shots, "seed": self.seed,
            "backbone": self.backbone, "weights": self.weights, "hparams": self.full_hparams(),
            "eval_datasets": list(self.eval_datasets),
        }
        if self.protocol != HARNESS:
            d["protocol"] = self.protocol
        if self.train_aug is not None:
            d["train_aug"] = self.train_aug
        if self.precision is not None:  # bf16 and fp32 runs are other cells: they never overwrite or mix
            d["precision"] = self.precision
        text = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def train_aug(self) -> str | None:
        """The training augmentation in place of the dataset's own (None: the dataset's)."""
        return protocol_train_aug(self.protocol, self.dataset, self.method)

    def full_hparams(self) -> dict[str, Any]:
        """The method's whole config (defaults filled in) as a dict, so that a changed default is a new cell."""
        return asdict(self.config)

    def budget(self) -> int:
        """The query budget (:func:`craft.methods.base.run_budget`): the config's, else the method's default;
        0 for zero-shot and white-box runs."""
        return self._budget

    def label(self) -> str:
        return f"{self.method}/{self.dataset}/{self.shots}shot/seed{self.seed}/{self.backbone}"


# ----------------------------------------------------------------------------- frozen method configs


class _Frozen:
    """Mixin of a method's config class: each field is set once, by ``__init__``, and never again."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.__dict__ or name not in self.__dataclass_fields__:  # type: ignore[attr-defined]
            raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}: a cell's method config is frozen")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}: a cell's method config is frozen")


@functools.cache
def _frozen_class(cls: type) -> type:
    """``cls`` (a method's config dataclass) with :class:`_Frozen` in front: still an instance of ``cls``,
    with its validation and ``asdict``; named in this module so that pickling (Ray) finds it."""
    name = f"Frozen{cls.__name__}"
    frozen = type(name, (_Frozen, cls), {"__module__": __name__, "__qualname__": name})
    globals()[name] = frozen
    return frozen


for _method in METHODS.values():  # made at import, so that an unpickling process has them
    _frozen_class(_method.config_cls)


def frozen_config(method: str, hparams: dict[str, Any] | None = None, where: str = "") -> Any:
    """:func:`craft.methods.make_config`, frozen: the method's config class, whose fields cannot be set again."""
    plain = make_config(method, hparams, where)  # unknown keys refused with the method's own sentence
    return _frozen_class(type(plain))(**{f.name: getattr(plain, f.name) for f in dataclasses.fields(plain)})
