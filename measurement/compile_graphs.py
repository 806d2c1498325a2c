"""Graphs a compiled engine builds over the calls of a sweep, and what each call costs.

Run from the repository root:

    python -m measurement.compile_graphs [--backbone craft-tiny] [--weights builtin] [--device cpu]
        [--duck-sizing]

Calls ``text_features`` of a ``compile=True`` engine as a sweep does: a generation's 40
candidates at a dataset's class count, one candidate (the prompt in use: refinement and
evaluation), a model server's merged queries of several runs, and other datasets' class counts.
Prints, per call, its seconds and the number of graphs compiled so far. ``--duck-sizing`` calls
the compiled functions as ``torch.compile`` leaves them (the compiler's default: equal input
sizes share a symbol), without :func:`benchmark.model.engine._one_graph`. Speed does not depend on
the weights.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmark.model.engine import ClipEngine
from benchmark.model.loading import load_model

# (candidates, classes) of consecutive calls: Caltech101's generation, the prompt in use, 2 and
# 7 runs' generations merged by a server, then DTD's, EuroSAT's and SUN397's class counts.
CALLS = [(40, 100), (1, 100), (80, 100), (280, 100), (40, 47), (1, 47), (40, 10), (40, 397)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="craft-tiny")
    p.add_argument("--weights", default="builtin")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--duck-sizing", action="store_true", help="the compiler's default sizing, as before _one_graph")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from torch._dynamo.utils import counters

    engine = ClipEngine(load_model(args.backbone, args.weights, args.device), args.device, compile=True)
    if args.duck_sizing:
        engine._encode_prefix = torch.compile(engine._prefix_features, dynamic=True)
        engine._encode = torch.compile(engine._encode_embeddings, dynamic=True)
    p0 = engine.embed_words("a photo of a")
    gen = torch.Generator().manual_seed(0)
    print(f"{args.backbone} on {args.device}, duck sizing {'on' if args.duck_sizing else 'off'}")
    print(f"{'candidates':>10} {'classes':>8} {'seconds':>8} {'graphs so far':>14}")
    total = 0.0
    for n_cand, n_cls in CALLS:
        ctx = p0 + 0.2 * torch.randn(n_cand, *p0.shape, generator=gen)
        part = engine.class_part([f"class {i}" for i in range(n_cls)])
        start = time.perf_counter()
        engine.text_features(ctx, part)
        if engine.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        total += seconds
        print(f"{n_cand:>10} {n_cls:>8} {seconds:>8.2f} {counters['stats']['unique_graphs']:>14}")
    print(f"total {total:.1f} s")


if __name__ == "__main__":
    main()
