"""The CraFT fitness at several candidates per operation: time per generation, and agreement to the bit.

Run from the repository root:

    python -m measurement.fitness_chunks [--shapes 160x10 1600x100] [--popsize 40] [--repeats 20]

For each ``IMAGESxCLASSES`` shape (160x10: the built-in suite's 16 shots; 1600x100: Caltech101's),
random logits of ``popsize`` candidates and the refinement MLP: ``prompt_fitness`` one candidate at
a time (``batched=False``), at the CPU's default chunk (:data:`craft.losses.FITNESS_CPU_CHUNK_LOGITS`
logits) and at the largest (``batched=True``). Printed: the median milliseconds of each, one torch
thread as a sweep's run has, and whether each equals one-at-a-time to the bit on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=["160x10", "80x10", "1600x100"], help="IMAGESxCLASSES")
    p.add_argument("--popsize", type=int, default=40)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)

    import torch

    from benchmark.errors import UserError
    from craft.losses import FITNESS_CPU_CHUNK_LOGITS, prompt_fitness
    from craft.refine import RefinementMLP

    torch.set_num_threads(1)
    print(f"fitness of {args.popsize} candidates, one thread, median of {args.repeats} (ms); "
          f"'=' equals one-at-a-time to the bit, '~' does not")
    print(f"{'shape':>10s} {'one at a time':>14s} {f'cpu chunk ({FITNESS_CPU_CHUNK_LOGITS})':>18s} {'batched':>10s}")
    for shape in args.shapes:
        try:
            n, c = (int(v) for v in shape.lower().split("x"))
        except ValueError:
            raise UserError(f"--shapes: {shape!r} is not IMAGESxCLASSES (e.g. 160x10)") from None
        g = torch.Generator().manual_seed(0)
        logits = 3 * torch.randn(args.popsize, n, c, generator=g)
        labels = torch.arange(n) % c
        torch.manual_seed(0)
        mlp = RefinementMLP(c, 512 if c >= 1000 else 256)
        cells = []
        with torch.no_grad():
            ref = prompt_fitness(logits, labels, 1.0, mlp, batched=False)
            for batched in (False, None, True):
                out = prompt_fitness(logits, labels, 1.0, mlp, batched=batched)
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    prompt_fitness(logits, labels, 1.0, mlp, batched=batched)
                    times.append(time.perf_counter() - start)
                cells.append(f"{1e3 * statistics.median(times):.2f} {'=' if torch.equal(out, ref) else '~'}")
        print(f"{shape:>10s} {cells[0]:>14s} {cells[1]:>18s} {cells[2]:>10s}")


if __name__ == "__main__":
    main()
