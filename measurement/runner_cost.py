"""The runner's own work per CraFT generation at a dataset's 16-shot shapes (one CPU thread).

Run from the repository root:

    python -m measurement.runner_cost [--datasets caltech101 imagenet] [--popsize 40] [--repeats 3]

What a run does per generation besides its queries, on random logits of the dataset's shapes
(``popsize x 16*classes images x classes``): the fitness (cross-entropy, and KL to the refinement
MLP's output on every candidate's logits), one refinement epoch on the mean prompt's logits, and
pycma's ask + tell. ``--batched`` also times the fitness as one batched expression over all
candidates (the code before ``prompt_fitness`` went one candidate at a time). Medians in seconds, one torch/BLAS thread, as a sweep's
run task has. This is the work a run does on its CPU whatever serves its queries.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["caltech101", "imagenet"])
    p.add_argument("--popsize", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batched", action="store_true", help="also time the batched fitness (MLP on all, then losses)")
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from measurement.loops import dataset_shapes
    from craft.losses import prompt_fitness, refinement_loss
    from craft.methods import CraFTConfig
    from craft.cma_es import cma_strategy
    from craft.refine import RefinementMLP

    torch.set_num_threads(1)
    cfg = CraFTConfig()
    print(f"runner work per CraFT generation, popsize {args.popsize}, one thread, median of {args.repeats} (s)")
    print(f"{'dataset':14s} {'classes':>7s} {'images':>7s} {'fitness':>8s} {'epoch':>7s} {'CMA-ES':>7s} {'total':>7s}"
          + (f" {'batched fitness':>16s}" if args.batched else ""))
    for key in args.datasets:
        shapes = dataset_shapes(key)
        c, n = shapes.classes, shapes.train
        g = torch.Generator().manual_seed(0)
        logits = 3 * torch.randn(args.popsize, n, c, generator=g)
        y = torch.arange(n) % c
        mlp = RefinementMLP(c, 512 if c >= 1000 else cfg.hidden)
        opt = torch.optim.Adam(mlp.parameters(), lr=cfg.lr)
        es = cma_strategy(cfg.intrinsic_dim, cfg.sigma, args.popsize, cfg.bound, 1, cfg.cma_eigen_gap)
        times: dict[str, list[float]] = {"fitness": [], "epoch": [], "cma": []}
        batched: list[float] = []
        with threadpool_limits(1, user_api="blas"):
            for _ in range(args.repeats):
                if args.batched:
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        _batched_fitness(logits, mlp(logits), y, cfg.weight)
                    batched.append(time.perf_counter() - t0)
                t1 = time.perf_counter()
                with torch.no_grad():
                    fitness = prompt_fitness(logits, y, cfg.weight, mlp)
                t2 = time.perf_counter()
                train = logits[0]
                for start in range(0, n, cfg.batch_size):
                    idx = torch.arange(start, min(start + cfg.batch_size, n))
                    loss = refinement_loss(mlp(train[idx]), train[idx], y[idx], cfg.weight)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                t3 = time.perf_counter()
                xs = es.ask()
                es.tell(xs, fitness.tolist())
                t4 = time.perf_counter()
                for k, v in zip(times, (t2 - t1, t3 - t2, t4 - t3)):
                    times[k].append(v)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{shapes.key.split('/')[-1]:14s} {c:7d} {n:7d} {med['fitness']:8.3f} "
              f"{med['epoch']:7.3f} {med['cma']:7.3f} {sum(med.values()):7.3f}"
              + (f" {statistics.median(batched):16.3f}" if batched else ""))
        del logits


def _batched_fitness(logits, refined, labels, lambda_i):
    """The fitness as the code had it before: one expression over all candidates."""
    import torch.nn.functional as F

    n_cand, n_img, n_cls = logits.shape
    ce = F.cross_entropy(logits.reshape(-1, n_cls), labels.repeat(n_cand), reduction="none").reshape(n_cand, n_img).mean(1)
    kl = F.kl_div(F.log_softmax(logits, dim=-1), F.softmax(refined, dim=-1), reduction="none").sum(-1).mean(1)
    return ce + lambda_i * kl


if __name__ == "__main__":
    main()
