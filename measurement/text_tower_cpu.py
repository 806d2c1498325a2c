"""The fast text path's CPU settings, side by side: MLP row blocks and chunk size.

Run from the repository root:

    python -m measurement.text_tower_cpu [--backbone craft-tiny] [--candidates 40] [--prompt-tokens 20]
                                        [--chunks 512 1024 2048] [--repeats 11]

On one engine's model, one BLAS/torch thread, it times ``text_features`` for one generation
(``--candidates`` x the paper-shapes dataset's classes) through the official-style path, the fast
path as configured (row-blocked MLPs, chunks sized by the CPU memory budget), the fast path with
one MLP call per chunk (``MLP_ROWS`` above every chunk's rows), and the fast path at fixed chunk
sizes. Calls are interleaved and the process CPU time of each is kept; the table shows medians,
in milliseconds, and the official path's median over each.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def _mlp_rows(rows: int | None) -> Iterator[None]:
    from benchmark.model import text_tower

    saved = text_tower.MLP_ROWS
    text_tower.MLP_ROWS = rows or saved
    try:
        yield
    finally:
        text_tower.MLP_ROWS = saved


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="craft-tiny")
    p.add_argument("--dataset", default="caltech101")
    p.add_argument("--candidates", type=int, default=40)
    p.add_argument("--prompt-tokens", type=int, default=20, help="as craft perf's (0: names as they are)")
    p.add_argument("--chunks", type=int, nargs="*", default=[512, 1024, 2048])
    p.add_argument("--repeats", type=int, default=11)
    args = p.parse_args(argv)

    import torch

    from benchmark.model import text_tower
    from benchmark.model.engine import ClipEngine
    from benchmark.model.loading import BUILTIN, RANDOM, load_model
    from measurement.loops import dataset_shapes, padded_classnames
    from measurement.official_path import OfficialEngine

    torch.set_num_threads(1)
    loaded = load_model(args.backbone, BUILTIN if args.backbone == "craft-tiny" else RANDOM, "cpu")
    official = OfficialEngine(loaded, "cpu")
    fast = ClipEngine(loaded, "cpu")
    p0 = fast.embed_words("a photo of a")
    classes = dataset_shapes(args.dataset).classes
    names = padded_classnames(loaded.tokenizer, classes, args.prompt_tokens, p0.shape[0], fast.context_length)
    part = fast.class_part(names)
    ctx = p0 + 0.05 * torch.randn(args.candidates, *p0.shape, generator=torch.Generator().manual_seed(0))
    tokens = 1 + p0.shape[0] + part.max_len + 1
    default_chunk = fast.chunk_sequences(tokens)

    def call(engine: ClipEngine, rows: int | None = None) -> Callable[[], None]:
        def run() -> None:
            with _mlp_rows(rows):
                engine.text_features(ctx, engine.class_part(names))
        return run

    paths: dict[str, Callable[[], None]] = {
        "official (one candidate a call, full context)": call(official),
        f"fast, as configured (chunks of {default_chunk}, MLP rows {text_tower.MLP_ROWS})": call(fast),
        f"fast, chunks of {default_chunk}, one MLP call per chunk": call(fast, 10**9),
    }
    for n in args.chunks:
        paths[f"fast, chunks of {n}"] = call(ClipEngine(loaded, "cpu", mode="fast", max_sequences=n))

    times: dict[str, list[float]] = {k: [] for k in paths}
    with torch.no_grad():
        for run in paths.values():
            run()
        for r in range(args.repeats):
            for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
                c0 = time.process_time()
                paths[name]()
                times[name].append(time.process_time() - c0)
    ref = statistics.median(times[next(iter(paths))])
    print(f"{args.backbone}: {args.candidates} candidates x {classes} classes, prompts of {tokens} tokens "
          f"(official path: {fast.context_length}); CPU ms per call, median of {args.repeats}")
    print(f"{'path':60s} {'ms':>8s} {'official/this':>14s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:60s} {med * 1000:8.1f} {ref / med:13.2f}x")


if __name__ == "__main__":
    main()
