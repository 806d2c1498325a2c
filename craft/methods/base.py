"""What every method shares: its task description, config parsing, evaluation and result record."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Protocol, TypeVar

import torch

from craft.blackbox import BlackBox
from craft.budget import default_budget
from craft.transfer import HostCopy, to_device


@dataclass
class Task:
    """What a method knows of its data: class names, template and labels per image set.

    The images themselves stay behind the black box. ``eval_splits`` are the image sets a
    run reports accuracy on; a hyperparameter search passes ``("val",)`` so that no test
    image is ever scored.
    """

    dataset: str
    classnames: list[str]
    template: str
    labels: dict[str, torch.Tensor]
    shots: int = 16
    eval_splits: tuple[str, ...] = ("val", "test")
    # Image sets scored in a label subspace (ImageNet-A/R: 200 of ImageNet's 1000 classes).
    class_subsets: dict[str, list[int]] = field(default_factory=dict)
    # Called with each evaluated trace row (queries used, accuracies): progress reports and
    # the pruning of a hyperparameter search. It may raise to stop the run.
    on_eval: Callable[[dict[str, float]], None] | None = None
    # The model's name behind the black box (``ViT-B-16``), as the user of an API knows it: only
    # defaults that the official scripts set per backbone read it (CBBT's ImageNet epochs).
    backbone: str = ""


@dataclass
class RunResult:
    """One run: its final metrics (top-1 in %), black-box usage and per-generation trace."""

    method: str
    hparams: dict[str, Any]
    metrics: dict[str, float]
    usage: dict[str, int]
    trace: list[dict[str, float]] = field(default_factory=list)
    learned_params: int = 0
    learned_bytes: int = 0
    wall_s: float = 0.0


C = TypeVar("C")


def method_config_from_dict(cls: type[C], values: dict[str, Any] | None, where: str = "") -> C:
    """Build a method config dataclass, rejecting unknown keys with the list of known ones."""
    values = dict(values or {})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)}{' in ' + where if where else ''}; "
            f"{cls.__name__} accepts: {', '.join(sorted(names))}"
        )
    return cls(**values)  # type: ignore[call-arg]


def reject_invalid(cfg: Any, checks: dict[str, bool], expected: str = "") -> None:
    """Raise one ValueError naming every field whose check failed, with its value (and ``expected``)."""
    bad = [k for k, ok in checks.items() if not ok]
    if bad:
        values = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in bad)
        raise ValueError(f"invalid hyperparameter value(s): {values}" + (f" (expected: {expected})" if expected else ""))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return _percent(_top1_share(logits, labels))


def _top1_share(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Share of images whose top class is their label, as a tensor on ``logits``' device; None without images."""
    if labels.numel() == 0:
        return None
    return (logits.argmax(-1) == labels.to(logits.device)).float().mean()


def _percent(share: torch.Tensor | None) -> float:
    """A :func:`_top1_share` (on the host) in percent; NaN without images."""
    return float("nan") if share is None else float(share.item() * 100.0)


def restrict_logits(logits: torch.Tensor, subset: list[int]) -> torch.Tensor:
    """Logits with every class outside ``subset`` at -inf: argmax over the subset, in parent labels.

    The subset goes to the logits' device through :func:`craft.transfer.to_device`: indexing a GPU
    tensor with a Python list copies it in from pageable memory, which waits for the whole GPU."""
    idx = to_device(torch.as_tensor(subset, dtype=torch.long) % logits.shape[-1], logits.device)  # -1: the last, as a list index
    return torch.full_like(logits, float("-inf")).index_copy_(-1, idx, logits.index_select(-1, idx))


def evaluate(
    box: BlackBox,
    task: Task,
    contexts: torch.Tensor | None,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Top-1 of a prompt (or of the zero-shot template when ``contexts`` is None) on the eval sets."""
    return evaluate_async(box, task, contexts, head)()


def evaluate_async(
    box: BlackBox,
    task: Task,
    contexts: torch.Tensor | None,
    head: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Callable[[], dict[str, float]]:
    """:func:`evaluate` with its queries queued and the accuracies read back later: call the returned
    function for the metrics (on a GPU it waits for this evaluation's copies, nothing queued after)."""
    pending: dict[str, HostCopy | None] = {}
    for split in task.eval_splits:
        if contexts is None:
            logits = box.template_logits(task.template, split)
        else:
            logits = box.logits(contexts, split, budgeted=False)[0]
        if head is not None:
            with torch.no_grad():
                logits = head(logits)
        if split in task.class_subsets:
            logits = restrict_logits(logits, task.class_subsets[split])
        share = _top1_share(logits, to_device(task.labels[split], logits.device))
        pending[f"top1_{split}"] = None if share is None else HostCopy(share)

    def finish() -> dict[str, float]:
        return {k: _percent(None if h is None else h.get()) for k, h in pending.items()}

    return finish


Steps = Generator[None, None, RunResult]
"""A run as a generator (``steps`` of BBT and CraFT): it yields where it would next wait for its
device, so that a driver may step other runs meanwhile (:mod:`craft.interleave`), and returns
its :class:`RunResult`."""


def drive(steps: Steps) -> RunResult:
    """Run a method's steps to the end, alone."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


CLIENT, SERVER = "client", "server"


class Method(Protocol):
    """A method: a name, a config dataclass, ``run``, and the traits that tell a sweep how to run it."""

    name: str
    config_cls: type
    learns: bool  # False: nothing is fitted (zero-shot): one run per dataset, whatever its shots
    runs_on: str  # CLIENT: through the black box; SERVER: beside the model (white-box references, which need it)
    colocatable: bool  # may run in its model server's process, logits on its device (a sweep's colocate: true)
    needs_fp32: bool  # its server computes in fp32 under precision auto (bf16 rounding swamps its arithmetic)

    def default_budget(self, config: Any, shots: int, classes: int, dataset: str, backbone: str = "") -> int:
        """Its budget on a task (``shots`` per class of ``classes``) when its config sets none."""
        ...

    def run(self, box: BlackBox, task: Task, config: Any, seed: int) -> RunResult: ...


class MethodTraits:
    """The traits' defaults: a learning method that runs through the black box, in the server's default precision."""

    learns: bool = True
    runs_on: str = CLIENT
    colocatable: bool = False
    needs_fp32: bool = False

    def default_budget(self, config: Any, shots: int, classes: int, dataset: str, backbone: str = "") -> int:
        """The queries of a run whose config sets no budget: by shots, as the official CraFT scripts."""
        return default_budget(shots, dataset)

    def default_image_budget(self, config: Any, queries: int, n_train: int, dataset: str) -> int | None:
        """Images its budgeted image-side calls may encode when its config sets no ``image_budget``
        (``queries``: its query budget; ``n_train``: training images). None: no image-side budget
        (methods that make no image-side calls are refused any)."""
        return None


class Timer:
    """Wall-clock seconds since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def run_image_budget(method: Any, config: Any, queries: int, n_train: int, dataset: str) -> int:
    """The image budget of a run (:class:`craft.blackbox.MeteredBlackBox`'s ``image_budget``): the config's
    ``image_budget`` when it gives one, else the method's ``default_image_budget``; 0 for methods without one
    (text-side methods: any image-side call of theirs is refused)."""
    if getattr(config, "image_budget", None) is not None:
        return int(config.image_budget)
    fn = getattr(method, "default_image_budget", None)
    value = fn(config, queries, n_train, dataset) if fn is not None else None
    return 0 if value is None else int(value)


def run_budget(method: Any, config: Any, shots: int, dataset: str, classes: int, backbone: str = "") -> int:
    """The query budget of a run of ``method`` (a :class:`craft.methods.Method`) with ``config``.

    The config's ``budget`` when it gives one (0 included: never "the default"); else the method's
    ``default_budget`` (by shots, as the official CraFT scripts; CBBT: the query cost of its official
    schedule). 0 for methods that make no budgeted queries: those that learn nothing (zero-shot CLIP)
    and those that run on the server (white-box references). The one place a sweep's cells, its
    config checks and a search's studies get a budget from.
    """
    if not method.learns or method.runs_on == SERVER:
        return 0
    if getattr(config, "budget", None) is not None:
        return int(config.budget)
    return int(method.default_budget(config, shots, classes, dataset, backbone))
