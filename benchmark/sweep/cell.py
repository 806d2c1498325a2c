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
from craft.budget import default_budget
from craft.methods import METHODS, get_method, make_config


@dataclass(frozen=True)
class Cell:
    """Everything that defines a run. ``cell_id`` hashes all of it except where the data lives.

    The method's typed config (``config``: every hyperparameter, defaults filled in) and the id
    are made once, when the cell is; the config is frozen (:func:`frozen_config`), so neither can
    drift from the other. ``hparams`` keeps what was given, as the model servers take it.
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
    if TYPE_CHECKING:  # set once by __post_init__; not fields, so that asdict(cell) is what defines the cell
        config: Any  # the method's frozen, typed config
        cell_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", frozen_config(self.method, self.hparams, f"cell {self.method}/{self.dataset}"))
        object.__setattr__(self, "cell_id", self._id())

    def _id(self) -> str:
        """The hash of the cell's definition; ids of cells from before protocols (and train_aug) stay as they were."""
        d: dict[str, Any] = {
            "method": self.method, "dataset": self.dataset, "shots": self.shots, "seed": self.seed,
            "backbone": self.backbone, "weights": self.weights, "hparams": self.full_hparams(),
            "eval_datasets": list(self.eval_datasets),
        }
        if self.protocol != HARNESS:
            d["protocol"] = self.protocol
        if self.train_aug is not None:
            d["train_aug"] = self.train_aug
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
        """The query budget: the config's, else the method's default; 0 for zero-shot and white-box runs.

        The default is by shots as in the official CraFT scripts, except for methods with a
        ``default_budget`` of their own (CBBT: the query cost of its official schedule, which
        depends on the number of training images, ``shots x classes``, and on ImageNet on the backbone).
        """
        method = get_method(self.method)
        if self.method == "zero_shot_clip" or getattr(method, "whitebox", False):
            return 0
        config = self.config
        if getattr(config, "budget", None) is not None:  # an explicit value, 0 included, is never the default
            return int(config.budget)
        if hasattr(method, "default_budget"):
            return int(method.default_budget(config, self.shots * get_spec(self.dataset).classes, self.dataset, self.backbone))
        return default_budget(self.shots, self.dataset)

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
