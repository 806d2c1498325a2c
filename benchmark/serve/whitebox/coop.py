"""White-box CoOp on the engine: context vectors learned by backprop through the text encoder.

As CoOp (Zhou et al., IJCV 2022): one context shared by all classes (``[SOS] ctx "classname."
[EOS]``, the engine's prompt assembly), cross-entropy on ``logit_scale * cos``, SGD with
momentum, one constant warm-up epoch then cosine, batch 32. Only the text side is learned, so
the image features are encoded without gradients: each epoch a fresh augmented view of the
training images, as Dassl re-augments every epoch (``train_views: fresh``), or the task's one
augmented pass (``cached``). Training memory is measured for the cost table.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

import torch
import torch.nn.functional as F

from benchmark.model.engine import ClipEngine, TaskData
from benchmark.memory import peak_memory
from craft.blackbox import Usage, view_split
from craft.methods.base import RunResult, Timer, accuracy, restrict_logits
from craft.methods.whitebox import CoOpConfig, coop_epochs
from craft.schedule import steps_per_epoch, warmup_cosine

COOP_N_CTX = 16
COOP_INIT_STD = 0.02


def initial_context(engine: ClipEngine, cfg: CoOpConfig, max_ctx: int, generator: torch.Generator) -> torch.Tensor:
    """CoOp's initial context: N(0, 0.02^2) vectors, or the embedded ``ctx_init`` words."""
    if cfg.ctx_init.strip():
        ctx = engine.embed_words(cfg.ctx_init)
        if cfg.n_ctx is not None and cfg.n_ctx != ctx.shape[0]:
            raise ValueError(
                f"n_ctx={cfg.n_ctx} contradicts ctx_init={cfg.ctx_init!r}, which is {ctx.shape[0]} token(s); "
                "leave n_ctx unset to use the words' count"
            )
    else:
        n_ctx = COOP_N_CTX if cfg.n_ctx is None else cfg.n_ctx
        ctx = torch.randn(n_ctx, engine.width, generator=generator) * COOP_INIT_STD
    if ctx.shape[0] > max_ctx:
        raise ValueError(
            f"n_ctx={ctx.shape[0]} context tokens do not fit backbone {engine.loaded.backbone}: its context length "
            f"{engine.context_length} leaves room for {max_ctx} beside the longest class prompt; set n_ctx <= {max_ctx}"
        )
    return ctx


def train_coop(
    engine: ClipEngine,
    data: TaskData,
    labels: dict[str, torch.Tensor],
    cfg: CoOpConfig,
    seed: int,
    *,
    shots: int,
    dataset: str,
    eval_splits: tuple[str, ...] = ("val", "test"),
    class_subsets: dict[str, list[int]] | None = None,
    on_eval: Callable[[dict[str, float]], None] | None = None,
) -> tuple[RunResult, float | None]:
    """Train CoOp on ``data``'s cached features; the result and the peak training memory (MiB)."""
    timer = Timer()
    gen = torch.Generator().manual_seed(seed)
    part = engine.class_part(data.classnames)
    device = engine.device
    ctx = torch.nn.Parameter(initial_context(engine, cfg, engine.max_ctx(part), gen).to(device))
    opt = torch.optim.SGD([ctx], lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    images = data.features["train"].to(device)
    y_all = labels["train"].to(device)
    n_train, n_cls = len(y_all), len(data.classnames)
    epochs = coop_epochs(cfg, shots, dataset)
    n_steps = steps_per_epoch(n_train, cfg.batch_size)
    usage = Usage()
    trace: list[dict] = []
    metrics: dict[str, float] = {}

    def evaluate() -> dict[str, float]:
        with torch.no_grad():
            text = engine.text_features(ctx.detach().unsqueeze(0), part)[0]
        usage.unbudgeted_queries += len(eval_splits)
        usage.text_sequences += n_cls
        usage.calls += 1
        out = {}
        for split in eval_splits:
            logits = engine.logits(data.features[split], text).cpu()
            if class_subsets and split in class_subsets:
                logits = restrict_logits(logits, class_subsets[split])
            out[f"top1_{split}"] = accuracy(logits, labels[split])
        return out

    weights = sum(p.numel() * p.element_size() for p in engine.model.parameters())
    with peak_memory(device, resident_bytes=weights) as peak:
        for epoch in range(epochs):
            for group in opt.param_groups:
                group["lr"] = warmup_cosine(epoch, epochs, cfg.lr, cfg.warmup_epochs, cfg.warmup_lr)
            if cfg.train_views == "fresh":
                images, encoded = data.images(view_split(epoch + 1))
                images = images.to(device)
                usage.images_encoded += encoded
            order = torch.randperm(n_train, generator=gen).to(device)
            losses = []
            for step in range(n_steps):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                text = engine.text_features_grad(ctx.unsqueeze(0), part)[0]
                loss = F.cross_entropy(engine.logit_scale * images[idx] @ text.T, y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.detach().item())
                usage.text_sequences += n_cls
                usage.calls += 1
            row = {"generation": epoch + 1, "queries": 0, "train_loss": sum(losses) / len(losses)}
            if (epoch + 1) % cfg.eval_every == 0 or epoch == epochs - 1:
                metrics = evaluate()
                row.update(metrics)
                if on_eval is not None:
                    on_eval(row)
            trace.append(row)
    n_params = ctx.numel()
    result = RunResult(
        "coop", asdict(cfg), metrics, usage.as_dict(), trace,
        learned_params=n_params, learned_bytes=n_params * 4, wall_s=timer(),
    )
    return result, peak.mb
