"""BlackVIP's SPSA loss differences in fp32 and under bf16 autocast (as the fast path on a GPU).

Run from the repository root:

    python -m measurement.blackvip_precision [--backbone craft-tiny] [--directions 32] [--batch 64]

SPSA-GC estimates the coordinator's gradient from ``L(w + c delta) - L(w - c delta)`` (c = 0.01 at
the first step, BlackVIP's official value). On one batch of the built-in suite's training images
(Digits-Noise, 16 shots, the official augmentation) and a freshly initialised coordinator, the
script computes that difference for ``--directions`` random directions with the image tower in
fp32 and under bf16 autocast, and prints how far bf16's differences are from fp32's (relative
error, correlation, sign agreement). Where bf16 rounding swamps the differences the estimate is
noise, and the method's server should compute in fp32 under ``precision: auto``
(``Method.needs_fp32``). The CPU's bf16 autocast stands in for the GPU's: the rounding is the same.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="craft-tiny")
    p.add_argument("--directions", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--c", type=float, default=0.01, help="SPSA's perturbation size c_k (default: 0.01)")
    args = p.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from benchmark.datasets.builtin import ensure_builtin_suite
    from benchmark.datasets.task_spec import TaskSpec
    from benchmark.model.engine import ClipEngine
    from benchmark.model.loading import BUILTIN, RANDOM, load_model
    from benchmark.model.task import prepare_task
    from craft.methods.blackvip import BlackVIPConfig, Coordinator, _set
    from craft.spsa import directions

    torch.set_num_threads(1)
    torch.manual_seed(0)
    weights = BUILTIN if args.backbone == "craft-tiny" else RANDOM
    engine = ClipEngine(load_model(args.backbone, weights))
    ensure_builtin_suite()
    data = prepare_task(engine, TaskSpec("digits_noise", 16, 1, eval_test=False, train_aug="rrc_flip"))
    x = data.pixels("train").rows(torch.arange(args.batch))
    y = data.labels["train"][: args.batch]
    text = engine.template_features(data.template, data.classnames)
    lo = torch.tensor([r[0] for r in data.pixel_range]).view(1, -1, 1, 1)
    hi = torch.tensor([r[1] for r in data.pixel_range]).view(1, -1, 1, 1)
    cfg = BlackVIPConfig()
    coord = Coordinator(tuple(x.shape[1:]), cfg, seed=1)
    params = coord.decoder_parameters()
    w = torch.nn.utils.parameters_to_vector(params).detach().clone()
    deltas = directions(args.directions, w.numel(), torch.Generator().manual_seed(2))

    def loss(vec: torch.Tensor, bf16: bool) -> float:
        _set(params, vec)
        with torch.no_grad():
            prompted = torch.maximum(torch.minimum(x + cfg.p_eps * coord(x), hi), lo)
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                feats = engine._vision_prompted(prompted, None).float()
            logits = engine.logit_scale * F.normalize(feats, dim=-1) @ text.T
            return float(F.cross_entropy(logits, y))

    coord.train()
    diffs = {False: [], True: []}
    for d in deltas:
        for bf16 in (False, True):
            diffs[bf16].append(loss(w + args.c * d, bf16) - loss(w - args.c * d, bf16))
    d32, d16 = torch.tensor(diffs[False]), torch.tensor(diffs[True])
    rel = float((d16 - d32).norm() / d32.norm())
    corr = float(torch.corrcoef(torch.stack([d32, d16]))[0, 1])
    signs = float(((d16 > 0) == (d32 > 0)).float().mean())
    print(f"{args.backbone} ({weights}), digits_noise 16-shot batch of {args.batch}, c = {args.c}, "
          f"{args.directions} SPSA directions, coordinator at its initialisation")
    print(f"  fp32 loss differences: mean |d| {float(d32.abs().mean()):.3e}")
    print(f"  bf16 against fp32: relative error {rel:.3f}, correlation {corr:.3f}, same sign {100 * signs:.1f}%")


if __name__ == "__main__":
    main()
