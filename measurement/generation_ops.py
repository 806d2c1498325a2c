"""Operations a CraFT run's own work dispatches per generation: on a GPU, about one kernel launch each.

Run from the repository root:

    python -m measurement.generation_ops [--datasets caltech101 imagenet] [--popsize 40]

Counts the aten operations (``TorchDispatchMode``) of the fitness of ``popsize`` candidates, one
candidate at a time (the CPU's way) and batched (``prompt_fitness(batched=True)``, the GPU's
way), and of one refinement epoch (mini-batches of 256), with torch's default Adam on CUDA
(``foreach``) and with the fused Adam the method uses there (``craft.refine.refinement_optimizer``),
at a dataset's 16-shot shapes. The fitness's tensors live on torch's ``meta`` device: nothing is
computed or allocated, so ImageNet's shapes cost nothing; the epoch runs on the CPU (meta has no
fused Adam; the operations are the same on CUDA). Each operation costs the CPU a few
microseconds to launch on a GPU, whatever its size: a count is the launch work a run leaves to
interleaving.
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
    with torch.no_grad():
        head = RefinementMLP(classes, hidden).to(meta)
        one = count_ops(lambda: prompt_fitness(logits, labels, 0.1, head, batched=False))
        batched = count_ops(lambda: prompt_fitness(logits, labels, 0.1, head, batched=True))

    train, y = torch.randn(images, classes), torch.randint(classes, (images,))
    order = torch.randperm(images)

    def epoch_ops(optimizer: str) -> tuple[int, int]:
        """Operations of an epoch, and of its optimizer's step alone."""
        mlp = RefinementMLP(classes, hidden)
        opt = torch.optim.Adam(mlp.parameters(), lr=1e-3, **{optimizer: True})

        def epoch() -> None:
            for start in range(0, images, batch_size):
                idx = order[start : start + batch_size]
                loss = refinement_loss(mlp(train[idx]), train[idx], y[idx], 0.1)
                opt.zero_grad()
                loss.backward()
                opt.step()

        epoch()  # Adam's state is created in its first step
        return count_ops(epoch), count_ops(opt.step)

    (foreach, foreach_step), (fused, fused_step) = epoch_ops("foreach"), epoch_ops("fused")
    return {"fitness_one_at_a_time": one, "fitness_batched": batched,
            "refinement_epoch_foreach": foreach, "refinement_epoch_fused": fused,
            "adam_step_foreach": foreach_step, "adam_step_fused": fused_step}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["caltech101", "imagenet"])
    p.add_argument("--popsize", type=int, default=40)
    args = p.parse_args(argv)

    from measurement.loops import dataset_shapes

    print(f"{'dataset':<28} {'fitness, 1 at a time':>20} {'fitness, batched':>16} "
          f"{'epoch, foreach Adam':>19} {'epoch, fused Adam':>17} {'mini-batches':>12} {'Adam step':>13}")
    for key in args.datasets:
        d = dataset_shapes(key)
        ops = generation_ops(d.classes, d.train, args.popsize, 512 if d.classes >= 1000 else 256)
        print(f"{d.key:<28} {ops['fitness_one_at_a_time']:>20} {ops['fitness_batched']:>16} "
              f"{ops['refinement_epoch_foreach']:>19} {ops['refinement_epoch_fused']:>17} {-(-d.train // 256):>12} "
              f"{ops['adam_step_foreach']:>6} -> {ops['adam_step_fused']:<3}")


if __name__ == "__main__":
    main()
