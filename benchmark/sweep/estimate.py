"""A sweep's text sequences and an estimate of its GPU-hours, from throughput ``craft perf`` measured.

A budgeted query is one candidate prompt, scored against every class: ``classes`` text sequences
through the text tower, the work a black-box run buys. GPU-hours = sequences / a GPU's measured
sequences per second. It is an estimate: it counts the budgeted queries only (not the evaluations,
nor encoding the images once per dataset, nor compiling), and it assumes the measured setting
(colocated runs, interleaved, compiled) keeps the GPU as busy as it did when measured.

Images are counted beside (:func:`cell_images`): the augmented views of the training images that
CraFT's refinement module (``refine_views: fresh``) and CoOp (``train_views: fresh``) encode, and the
images image-side queries re-encode. They are not in the GPU-hours: no image-tower rate has been
measured on a GPU yet (``craft perf --methods`` measures one where it runs).

The rates come from runs recorded in ``docs/measurements/throughput_log.md`` (the command of each
is in :data:`GPU_RATES`); a GPU not measured is refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.errors import UserError


@dataclass(frozen=True)
class Rate:
    """Text sequences per second that one GPU sustained inside CraFT loops, and where that was measured."""

    sequences_per_s: float
    source: str


# The text tower of RN50, RN101, ViT-B-32 and ViT-B-16 is one shape (width 512, 12 layers, 77 tokens),
# so one rate serves the paper's four backbones; a larger backbone's text tower is slower.
GPU_RATES: dict[str, Rate] = {
    "h100": Rate(168_197.0, "run E4 in docs/measurements/throughput_log.md: 4 colocated CraFT runs interleaved on "
                            "one H100, ViT-B-16 text tower, compile: reduce-overhead (craft perf --compile "
                            "--compile-mode reduce-overhead --runs 1,4 --cma-workers on --generations 20)"),
}


def check_gpu(name: str) -> Rate:
    """The measured rate of GPU ``name`` (case-insensitive); UserError naming the measured ones otherwise."""
    rate = GPU_RATES.get(name.lower())
    if rate is None:
        raise UserError(f"--gpu {name!r}: no craft perf measurement of that GPU; measured: {', '.join(GPU_RATES)} "
                        "(run bash measurement/device_perf.sh on one to measure it)")
    return rate


def cell_sequences(queries: int, dataset: str) -> int:
    """Text sequences of ``queries`` budgeted queries on ``dataset``: one per class each."""
    from benchmark.datasets.registry import get_spec

    return queries * get_spec(dataset).classes


def gpu_hours(sequences: int, gpu: str) -> float:
    """Estimated GPU-hours for ``sequences`` text sequences on ``gpu`` at its measured rate."""
    return sequences / check_gpu(gpu).sequences_per_s / 3600.0


def cell_images(cell, queries: int) -> int:
    """Images a cell's run encodes beyond its task's features (encoded once, and cached): a fresh
    augmented view of the training set each CraFT generation or CoOp epoch (when the cell's
    augmentation varies), or what its image-side queries may encode (its image budget)."""
    from benchmark.datasets.registry import get_spec, train_aug_of
    from benchmark.datasets.transforms import aug_varies
    from craft.methods import get_method
    from craft.methods.base import run_image_budget
    from craft.methods.whitebox import coop_epochs

    spec = get_spec(cell.dataset)
    n_train = cell.shots * spec.classes
    cfg = cell.config
    varies = aug_varies(train_aug_of(cell.dataset, cell.train_aug))
    if getattr(cfg, "refine_views", None) == "fresh" and hasattr(cfg, "popsize"):
        return (queries // cfg.popsize) * n_train if varies else 0
    if cell.method == "coop":
        return coop_epochs(cfg, cell.shots, cell.dataset) * n_train if varies and cfg.train_views == "fresh" else 0
    return run_image_budget(get_method(cell.method), cfg, queries, n_train, cell.dataset)
