"""``craft perf --methods``: each method's own loop on the fast path, its images and text sequences per second.

Text-side methods (BBT, CraFT, CBBT) spend their queries on the text tower; image-side ones
(BPT-VLM's visual prompt tokens, BlackVIP's pixel prompts) re-encode the training images at every
query, and LFA asks for image features once. One short run of each method with a small query
budget, on one engine, with a task of the dataset's shapes: random pixels in each channel's valid
range (the image tower's speed does not depend on their values), their features encoded from them.
Reported per method: wall time, queries, images encoded by queries (``query_images``) and text
sequences, and both rates.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from benchmark.errors import UserError

IMAGE_SIDE = ("bpt_vlm", "blackvip", "lfa")
DEFAULT_QUERIES = {"bbt": 200, "craft": 200, "bpt_vlm": 200, "blackvip": 40, "lfa": 0}


def pixel_task(engine, classes: int, shots: int, val_per_class: int, seed: int):
    """(TaskData with random pixels and their features, craft Task): ``classes`` x ``shots`` training images."""
    from benchmark.datasets.transforms import pixel_range
    from benchmark.model.engine import TaskData, TrainViews
    from craft.methods import Task

    g = torch.Generator().manual_seed(seed)
    size = engine.loaded.image_size
    mean, std = engine.loaded.mean_std
    rng = pixel_range(mean, std)
    lo = torch.tensor([r[0] for r in rng]).view(1, 3, 1, 1)
    hi = torch.tensor([r[1] for r in rng]).view(1, 3, 1, 1)
    labels = {"train": torch.arange(classes).repeat_interleave(shots),
              "val": torch.arange(classes).repeat_interleave(val_per_class)}
    pixels = {k: (lo + (hi - lo) * torch.rand(len(v), 3, size, size, generator=g)).to(engine.device)
              for k, v in labels.items()}
    feats = {k: engine.encode_pixels(v) for k, v in pixels.items()}
    classnames = [f"class {i}" for i in range(classes)]

    def view(v: int) -> tuple[torch.Tensor, int]:  # the refinement module's views: the training pass again
        return engine.encode_pixels(pixels["train"], normalize=False), 0

    data = TaskData(classnames, "a photo of a {}.", feats, train_views=TrainViews(view, varies=False), labels=labels,
                    pixel_source=pixels.__getitem__, pixel_range=rng)
    return data, Task("perf", classnames, "a photo of a {}.", labels, shots=shots, eval_splits=("val",))


def measure_method(engine, name: str, data, task, queries: int, seed: int) -> dict[str, Any]:
    """One run of method ``name`` with ``queries`` budgeted queries: its time and the work it asked for."""
    from benchmark.model.engine import EngineBackend
    from craft.blackbox import MeteredBlackBox
    from craft.budget import one_step
    from craft.methods import get_method, make_config
    from craft.methods.base import run_image_budget

    method = get_method(name)
    fields = set(getattr(method.config_cls, "__dataclass_fields__", {}))
    overrides: dict[str, Any] = {}
    if "budget" in fields:
        step = one_step(make_config(name, {}))
        queries = max(queries, 3 * step) if step else queries  # at least three of its steps
        overrides["budget"] = queries
    if "eval_every" in fields:
        overrides["eval_every"] = 10**9  # no evaluation inside the timed loop
    cfg = make_config(name, overrides)
    n_train = len(data.labels["train"])
    image_budget = run_image_budget(method, cfg, queries, n_train, "perf")
    box = MeteredBlackBox(EngineBackend(engine, data), queries, image_budget)
    before = engine.query_images_encoded
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    t0 = time.perf_counter()
    method.run(box, task, cfg, seed)
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)
    wall = time.perf_counter() - t0
    u = box.usage
    images = engine.query_images_encoded - before
    return {"method": name, "image_side": name in IMAGE_SIDE, "wall_s": wall, "queries": u.queries,
            "query_images": images, "text_sequences": u.text_sequences,
            "images_per_s": images / wall if wall > 0 else 0.0,
            "sequences_per_s": u.text_sequences / wall if wall > 0 else 0.0}


def measure_methods(engine, names: list[str], classes: int, shots: int, seed: int,
                    queries: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """Each of ``names`` measured in turn on one pixel task; a method that fails is reported, not raised."""
    from craft.methods import METHODS

    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(sorted(METHODS))}")
    data, task = pixel_task(engine, classes, shots, val_per_class=2, seed=seed)
    rows = []
    for name in names:
        q = (queries or {}).get(name, DEFAULT_QUERIES.get(name, 100))
        try:
            rows.append(measure_method(engine, name, data, task, q, seed))
        except Exception as exc:  # noqa: BLE001 - the other methods' figures still count
            rows.append({"method": name, "error": f"{type(exc).__name__}: {exc}"})
    return rows


def render_methods(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'method':<10} {'side':>6} {'wall s':>8} {'queries':>8} {'images':>9} {'images/s':>9} {'seq':>9} {'seq/s':>9}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['method']:<10} error: {r['error']}")
            continue
        lines.append(f"{r['method']:<10} {'image' if r['image_side'] else 'text':>6} {r['wall_s']:8.2f} {r['queries']:8,d} "
                     f"{r['query_images']:9,d} {r['images_per_s']:9,.0f} {r['text_sequences']:9,d} {r['sequences_per_s']:9,.0f}")
    return lines

