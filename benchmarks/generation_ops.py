"""Operations a CraFT run's own work dispatches per generation: on a GPU, about one kernel launch each.

Run from the repository root:

    python -m benchmarks.generation_ops [--datasets caltech101 imagenet] [--popsize 40]

Counts the aten operations (``TorchDispatchMode``) of the fitness of ``popsize`` candidates, one
candidate at a time (the CPU's way) and batched (``prompt_fitness(batched=True)``, the GPU's
way), and of one refinement epoch (mini-batches of 256, Adam with ``foreach`` as on CUDA), at a
dataset's 16-shot shapes. Tensors live on torch's ``meta`` device: nothing is computed or
allocated, so ImageNet's shapes cost nothing. Each operation costs the CPU a few microseconds to
launch on a GPU, whatever its size: a count is the launch work a run leaves to interleaving.
"""

from __future__ import annotations

import argparse


def count_ops(fn) -> int:
    """Number of aten operations ``fn()`` dispatches."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def generation_ops(classes: int, images: int, popsize: int, hidden: int, batch_size: int = 256) -> dict[str, int]:
    """Operations of the fitness (one candidate at a time and batched) and of one refinement epoch."""
    import torch

    from craft.losses import prompt_fitness, refinement_loss
    from craft.refine import RefinementMLP

    meta = torch.device("meta")
    logits = torch.empty(popsize, images, classes, device=meta)
    labels = torch.zeros(images, dtype=torch.long, device=meta)
    mlp = RefinementMLP(classes, hidden).to(meta)
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3, foreach=True)
    train = logits[0]
    order = torch.arange(images, device=meta)

    def epoch() -> None:
        for start in range(0, images, batch_size):
            idx = order[start : start + batch_size]
            loss = refinement_loss(mlp(train[idx]), train[idx], labels[idx], 0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()

    with torch.no_grad():
        one = count_ops(lambda: prompt_fitness(logits, labels, 0.1, mlp, batched=False))
        batched = count_ops(lambda: prompt_fitness(logits, labels, 0.1, mlp, batched=True))
    return {"fitness_one_at_a_time": one, "fitness_batched": batched, "refinement_epoch": count_ops(epoch)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["caltech101", "imagenet"])
    p.add_argument("--popsize", type=int, default=40)
    args = p.parse_args(argv)

    from benchmark.perf_measure import dataset_shapes

    print(f"{'dataset':<28} {'fitness, 1 at a time':>20} {'fitness, batched':>16} {'refinement epoch':>16}")
    for key in args.datasets:
        d = dataset_shapes(key)
        ops = generation_ops(d.classes, d.train, args.popsize, 512 if d.classes >= 1000 else 256)
        print(f"{d.key:<28} {ops['fitness_one_at_a_time']:>20} {ops['fitness_batched']:>16} {ops['refinement_epoch']:>16}")


if __name__ == "__main__":
    main()
