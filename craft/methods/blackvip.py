"""BlackVIP (Oh et al., CVPR 2023): an input-dependent pixel prompt from a coordinator, trained by SPSA-GC.

The coordinator (on the client, beside the method's own images, :meth:`craft.blackbox.MeteredBlackBox.pixels`)
is a frozen feature extractor and a small decoder: the image's feature ``z`` and a learned trigger vector
are reshaped to a ``grid x grid`` map and upsampled by transposed convolutions (depthwise 2x2 stride 2,
then pointwise, batch norm, GELU; as the official ``DecoderManual``) to a prompt of the image's shape.
The black box sees ``clip(x + p_eps * prompt(x))`` (clipped to the valid pixel range, the official
``clip_clipping``) scored against the template's text embeddings. The decoder's parameters (trigger and
batch norm's included) are trained by SPSA-GC (:mod:`craft.spsa`): per step, on a mini-batch,
``sp_avg`` directions x 2 sides = ``2 sp_avg`` queries, each re-encoding the batch's images.

Defaults are the official ``tl_bench.sh`` / ``vit_b16.yaml``: SPSA ``[o, c, a, alpha, gamma] =
[1.0, 0.01, 0.01, 0.4, 0.1]``, ``b1 = 0.9``, ``sp_avg = 5``, ``p_eps = 1``, batch 128. Departures (docs/fidelity.md):
the frozen extractor is a tiny random convolutional net, not the official pre-trained ViT-MAE-base
(none ships at the built-in scale), and the decoder starts from a ``grid``-sized map sized to the image
(2 x 2 for 32 px, 7 x 7 for 224 px as the official) with ``src_channels`` channels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from craft.blackbox import TRAIN, BlackBox, VisualPrompt
from craft.methods.base import MethodTraits, RunResult, Task, Timer, accuracy, reject_invalid, restrict_logits
from craft.schedule import steps_per_epoch
from craft.spsa import SPSAGC, directions, estimate


@dataclass
class BlackVIPConfig:
    """BlackVIP's hyperparameters. ``budget=None``: the whole schedule's queries
    (``epochs x steps x 2 sp_avg``); ``image_budget=None``: its images."""

    epochs: int = 20
    batch_size: int = 128
    spsa_o: float = 1.0
    spsa_c: float = 0.01
    spsa_a: float = 0.01
    spsa_alpha: float = 0.4
    spsa_gamma: float = 0.1
    b1: float = 0.9
    sp_avg: int = 5
    opt_type: str = "spsa-gc"
    p_eps: float = 1.0
    z_dim: int = 32
    src_channels: int = 16
    budget: int | None = None
    image_budget: int | None = None
    eval_every: int = 5

    def __post_init__(self) -> None:
        finite = math.isfinite
        reject_invalid(self, {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1,
            "spsa_c": finite(self.spsa_c) and self.spsa_c > 0, "spsa_a": finite(self.spsa_a) and self.spsa_a > 0,
            "spsa_o": self.spsa_o >= 0, "spsa_alpha": self.spsa_alpha >= 0, "spsa_gamma": self.spsa_gamma >= 0,
            "b1": 0 <= self.b1 < 1, "sp_avg": self.sp_avg >= 1, "opt_type": self.opt_type in ("spsa-gc", "spsa"),
            "p_eps": finite(self.p_eps) and self.p_eps >= 0, "z_dim": self.z_dim >= 1, "src_channels": self.src_channels >= 1,
            "budget": self.budget is None or self.budget >= 2 * self.sp_avg,
            "image_budget": self.image_budget is None or self.image_budget >= 0, "eval_every": self.eval_every >= 1,
        }, "counts >= 1, finite gains > 0, 0 <= b1 < 1, opt_type spsa-gc or spsa, budget >= one step (2 sp_avg)")


def _grid(size: int) -> tuple[int, int]:
    """``(grid, stages)``: the decoder's starting map and its 2x upsamplings to ``size`` pixels."""
    for stages in (5, 4, 3, 2, 1):
        if size % (2**stages) == 0 and size // (2**stages) >= 2:
            return size // (2**stages), stages
    raise ValueError(f"BlackVIP's decoder needs an image size divisible by 4, got {size}")


class Coordinator(nn.Module):
    """Frozen extractor (a small random conv net) + trainable decoder; ``forward`` gives the pixel prompt."""

    def __init__(self, image_shape: tuple[int, ...], cfg: BlackVIPConfig, seed: int) -> None:
        super().__init__()
        channels, size, _ = image_shape
        self.grid, stages = _grid(size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.enc = nn.Sequential(
                nn.Conv2d(channels, 16, 3, 2, 1), nn.GELU(), nn.Conv2d(16, cfg.z_dim, 3, 2, 1), nn.GELU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            for p in self.enc.parameters():
                p.requires_grad_(False)
            src = cfg.src_channels * self.grid * self.grid
            if src <= cfg.z_dim:
                raise ValueError(f"src_channels x grid^2 = {src} must exceed z_dim {cfg.z_dim} (room for the trigger)")
            self.src_channels = cfg.src_channels
            self.trigger = nn.Parameter(torch.empty(1, src - cfg.z_dim).uniform_(0.0, 0.1))
            c_in = cfg.src_channels
            widths = [64, 32, 32, 16][: stages - 1] + [16] * max(0, stages - 5)
            layers: list[nn.Module] = []
            for i, c_out in enumerate(widths):
                groups = math.gcd(c_in, 64 if i == 0 else c_in)
                layers += [nn.ConvTranspose2d(c_in, c_in if i else 64, 2, 2, 0, groups=groups)]
                mid = c_in if i else 64
                layers += [nn.ConvTranspose2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.GELU()]
                c_in = c_out
            layers += [nn.ConvTranspose2d(c_in, channels, 2, 2, 0, bias=False)]
            self.body = nn.Sequential(*layers)

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [self.trigger, *self.body.parameters()]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen extractor's ``z`` (computed once per batch: every candidate decoder shares it)."""
        with torch.no_grad():
            return self.enc(x)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        z = self.features(x) if z is None else z
        cube = torch.cat([z, self.trigger.expand(z.shape[0], -1)], dim=1).view(z.shape[0], self.src_channels, self.grid, self.grid)
        for layer in self.body:
            cube = _transposed(layer, cube) if isinstance(layer, nn.ConvTranspose2d) else layer(cube)
        return cube


def _transposed(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for the decoder's transposed convolutions (kernel 1, or kernel 2 stride 2 with one input
    channel per group or one group), as products and a reshape: the same sums, without the CPU's slow
    grouped-transposed-convolution kernel (it was 70% of a BlackVIP run's time on craft-tiny)."""
    w = layer.weight  # in x out/groups x k x k
    n, c, h, wd = x.shape
    k = layer.kernel_size[0]
    if k == 1:
        y = torch.einsum("nchw,co->nohw", x, w[:, :, 0, 0])
    elif layer.groups == c:  # one input channel per group: out channel c * (out/groups) + j
        y = (x[:, :, None, :, None, :, None] * w[None, :, :, None, :, None, :]).reshape(n, -1, h * k, wd * k)
    elif layer.groups == 1:
        y = torch.einsum("nchw,coab->nohawb", x, w).reshape(n, w.shape[1], h * k, wd * k)
    else:
        return layer(x)
    return y if layer.bias is None else y + layer.bias.view(1, -1, 1, 1)


def _set(params: list[nn.Parameter], w: torch.Tensor) -> None:
    torch.nn.utils.vector_to_parameters(w, params)


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per candidate of ``candidates x images x classes`` logits."""
    n_cand, n_img, n_cls = logits.shape
    return F.cross_entropy(logits.reshape(-1, n_cls).float(), y.repeat(n_cand), reduction="none").view(n_cand, n_img).mean(1)


class BlackVIP(MethodTraits):
    """BlackVIP: pixel prompts from a coordinator on the client, SPSA-GC through image-side queries."""

    name = "blackvip"
    config_cls = BlackVIPConfig

    def default_budget(self, config: BlackVIPConfig, shots: int, classes: int, dataset: str, backbone: str = "") -> int:
        return config.epochs * steps_per_epoch(shots * classes, config.batch_size) * 2 * config.sp_avg

    def default_image_budget(self, config: BlackVIPConfig, queries: int, n_train: int, dataset: str) -> int | None:
        return config.epochs * n_train * 2 * config.sp_avg

    def run(self, box: BlackBox, task: Task, config: BlackVIPConfig, seed: int) -> RunResult:
        timer = Timer()
        cfg = config
        gen = torch.Generator().manual_seed(seed)
        coord = Coordinator(tuple(box.info.image_shape), cfg, seed)
        params = coord.decoder_parameters()
        w = torch.nn.utils.parameters_to_vector(params).detach().clone()
        opt = SPSAGC(cfg.spsa_a, cfg.spsa_c, cfg.spsa_o, cfg.spsa_alpha, cfg.spsa_gamma, cfg.b1, cfg.opt_type == "spsa-gc")
        x_all = box.pixels(TRAIN).float()
        y_all = task.labels[TRAIN].long()
        n_train = len(y_all)
        cost = 2 * cfg.sp_avg
        limit = box.remaining() if cfg.budget is None else min(cfg.budget, box.remaining())
        trace: list[dict] = []
        metrics: dict[str, float] = {}
        k = 0
        stop = False
        n_steps = steps_per_epoch(n_train, cfg.batch_size)  # Dassl's loader: the last partial batch dropped
        for epoch in range(cfg.epochs):
            order = torch.randperm(n_train, generator=gen)
            losses = []
            for step in range(n_steps):
                idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
                images_left = box.images_remaining()
                if box.usage.queries + cost > limit or (images_left is not None and cost * len(idx) > images_left):
                    stop = True
                    break
                k += 1
                _, ck = opt.gains(k)
                deltas = directions(cfg.sp_avg, w.numel(), gen)
                candidates = torch.cat([w + ck * deltas, w - ck * deltas])  # sp_avg plus sides, then minus sides
                coord.train()
                with torch.no_grad():
                    z = coord.features(x_all[idx])
                    prompts = []
                    for cand in candidates:
                        _set(params, cand)
                        prompts.append(cfg.p_eps * coord(x_all[idx], z))
                    logits = box.image_logits(None, VisualPrompt(pixels=torch.stack(prompts)), TRAIN, idx).cpu()
                    loss = _ce(logits, y_all[idx])
                ghat = estimate(loss[: cfg.sp_avg], loss[cfg.sp_avg :], deltas, ck)
                w = opt.update(w, ghat, k)
                _set(params, w)
                losses.append(float(loss.mean()))
            if losses:
                row = {"generation": epoch + 1, "queries": box.usage.queries, "train_loss": sum(losses) / len(losses)}
                if (epoch + 1) % cfg.eval_every == 0 or stop or epoch == cfg.epochs - 1:
                    metrics = self._evaluate(box, task, coord, cfg)
                    row.update(metrics)
                    if task.on_eval is not None:
                        task.on_eval(row)
                trace.append(row)
            if stop:
                break
        if not metrics:
            metrics = self._evaluate(box, task, coord, cfg)
        n = w.numel()
        return RunResult(self.name, asdict(cfg), metrics, box.usage.as_dict(), trace, learned_params=n,
                         learned_bytes=4 * n, wall_s=timer())

    @staticmethod
    def _evaluate(box: BlackBox, task: Task, coord: Coordinator, cfg: BlackVIPConfig, chunk: int = 512) -> dict[str, float]:
        """Top-1 on the eval sets, each image with its own prompt (batch norm on its running statistics)."""
        coord.eval()
        out = {}
        for split in task.eval_splits:
            n = box.info.split_sizes[split]
            parts = []
            for start in range(0, n, chunk):
                idx = torch.arange(start, min(n, start + chunk))
                with torch.no_grad():
                    prompt = cfg.p_eps * coord(box.pixels(split, idx).float())
                parts.append(box.image_logits(None, VisualPrompt(pixels=prompt.unsqueeze(0)), split, idx, budgeted=False)[0].cpu())
            logits = torch.cat(parts) if parts else torch.zeros(0, len(task.classnames))
            if split in task.class_subsets:
                logits = restrict_logits(logits, task.class_subsets[split])
            out[f"top1_{split}"] = accuracy(logits, task.labels[split])
        return out
