"""CBBT's zeroth-order gradient estimate in fp32 and under bf16 autocast (as the fast path on a GPU).

Run from the repository root:

    python -m measurement.cbbt_precision [--backbone craft-tiny] [--q 256] [--seeds 8]

On a model's text tower (the built-in model's trained weights, another backbone's random ones), a cross-entropy loss of one context token ("a", CBBT's
initial prompt) over 16 random image features of 4 classes: the cosine between CBBT's one-sided
estimate (q directions, ``mu = max(1/numel, 0.001)``) and autograd's gradient, mean over seeds,
with the black box's forward pass in fp32 and under bf16 autocast. The CPU's bf16 autocast stands
in for the GPU's: the rounding of bf16 is the same on both.
"""

from __future__ import annotations

import argparse
import statistics
from contextlib import nullcontext

NAMES = ["zero", "one", "two", "three"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--q", type=int, default=256)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--backbone", default="craft-tiny")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from benchmark.model.engine import ClipEngine, EngineBackend, TaskData
    from benchmark.model.loading import BUILTIN, RANDOM, load_model
    from craft.zeroth_order import combine, default_mu, directions, perturbed

    torch.set_num_threads(1)
    torch.manual_seed(0)
    weights = BUILTIN if args.backbone == "craft-tiny" else RANDOM
    engine = ClipEngine(load_model(args.backbone, weights))
    g = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(16, engine.width, generator=g), dim=-1)
    y = torch.arange(16) % len(NAMES)
    backend = EngineBackend(engine, TaskData(NAMES, "{}", {"train": images}))

    p0 = engine.embed_words("a")
    leaf = p0.clone().requires_grad_(True)
    text = engine.text_features_grad(leaf.unsqueeze(0), backend.part)[0]
    F.cross_entropy(engine.logit_scale * images @ text.T, y).backward()
    true = leaf.grad.detach().flatten()
    mu = default_mu(p0.numel())

    def losses(prompts: torch.Tensor, bf16: bool) -> torch.Tensor:
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
        with ctx:
            logits = backend.logits(prompts, "train")[0].float()
        n = logits.shape[0]
        return F.cross_entropy(logits.reshape(-1, len(NAMES)), y.repeat(n), reduction="none").view(n, -1).mean(1)

    print(f"{args.backbone} ({weights}), q={args.q}, mu={mu:g}, {args.seeds} seeds: cosine(estimate, autograd gradient)")
    for name, bf16 in (("fp32", False), ("bf16 autocast", True)):
        cos = []
        for seed in range(args.seeds):
            dirs = directions(tuple(p0.shape), args.q, torch.Generator().manual_seed(seed))
            est = combine(losses(perturbed(p0, dirs, mu, two_sided=False), bf16), dirs, mu, False)
            cos.append(float(F.cosine_similarity(est.flatten(), true, dim=0)))
        print(f"  {name:14s} mean {statistics.mean(cos):.3f}  min {min(cos):.3f}  max {max(cos):.3f}")


if __name__ == "__main__":
    main()
