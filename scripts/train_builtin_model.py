"""Train the built-in ``craft-tiny`` CLIP on scikit-learn's digits and ship it to benchmark/model/assets.

Contrastive (CLIP) loss on the fixed model-training subset of ``load_digits()`` (see
``benchmark.datasets.builtin.digits_split``), captions from a few templates; deterministic.
Writes ``craft-tiny.safetensors`` (fp16) and the model card ``craft-tiny.md``.

    python scripts/train_builtin_model.py
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmark.datasets import builtin as bs  # noqa: E402
from benchmark.files import write_atomic  # noqa: E402
from benchmark.model import builtin as tiny  # noqa: E402

TEMPLATES = [bs.TEMPLATE, "a {} digit.", "the number {}.", "a handwritten {}."]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    # One thread is the fastest for this tiny model, and far more robust on a busy machine.
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out-dir", type=Path, default=tiny.ASSETS_DIR)
    return p.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def train(args: argparse.Namespace) -> tuple[torch.nn.Module, float, float]:
    """Train from scratch; returns the model and the training wall and CPU times (s)."""
    import open_clip

    seed_everything(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny.BUILTIN_BACKBONE, pretrained=None)
    tokenizer = open_clip.get_tokenizer(tiny.BUILTIN_BACKBONE)
    images, labels = bs.load_digits_arrays()
    train_idx, _ = bs.digits_split(len(labels))

    start, cpu_start = time.perf_counter(), time.process_time()
    pixels = torch.stack([preprocess(bs.digit_image(images[i])) for i in train_idx])
    y = torch.from_numpy(labels[train_idx])
    captions = [t.format(c) for t in TEMPLATES for c in bs.CLASSNAMES]
    tokens = tokenizer(captions).view(len(TEMPLATES), len(bs.CLASSNAMES), -1)
    full_embedding, used = model.token_embedding, torch.unique(tokens)
    tokens = _use_small_embedding(model, tokens, used)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": other, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for step in range(args.steps):
        lr = args.lr * (
            (step + 1) / args.warmup
            if step < args.warmup
            else 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / (args.steps - args.warmup)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        b = torch.randint(len(y), (args.batch_size,), generator=gen)
        t = torch.randint(len(TEMPLATES), (args.batch_size,), generator=gen)
        img_f, txt_f, scale = model(pixels[b], tokens[t, y[b]])
        logits = scale * img_f @ txt_f.T
        target = torch.arange(len(b))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}  scale {scale.item():.1f}", flush=True)
    with torch.no_grad():
        full_embedding.weight[used] = model.token_embedding.weight
    model.token_embedding = full_embedding
    model.eval()
    return model, time.perf_counter() - start, time.process_time() - cpu_start


def _use_small_embedding(model: torch.nn.Module, tokens: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """Swap in an embedding of only the ``used`` (sorted) token ids; return the remapped tokens.

    Same maths as training the full 49,408-row table (unused rows get no gradient and no weight
    decay), minus a dense 3M-parameter gradient and Adam update per step. The remap keeps the
    order of ids, so argmax pooling still finds the end-of-text token.
    """
    small = torch.nn.Embedding.from_pretrained(model.token_embedding.weight[used].clone(), freeze=False)
    model.token_embedding = small
    remap = torch.full((int(used.max()) + 1,), -1, dtype=torch.long)
    remap[used] = torch.arange(len(used))
    return remap[tokens]


def evaluate(model: torch.nn.Module) -> dict[str, float]:
    """Zero-shot accuracy (%) on the held-out clean digits and on each shifted suite test split."""
    import open_clip

    _, _, preprocess = open_clip.create_model_and_transforms(tiny.BUILTIN_BACKBONE, pretrained=None)
    tokenizer = open_clip.get_tokenizer(tiny.BUILTIN_BACKBONE)
    images, labels = bs.load_digits_arrays()
    _, held_out = bs.digits_split(len(labels))
    test_idx = bs.suite_splits(labels)["test"]
    clean = [bs.digit_image(images[i]) for i in held_out]
    acc = {"clean": bs.zero_shot_accuracy(model, preprocess, tokenizer, clean, labels[held_out])}
    for shift in bs.SHIFTS:
        ims = [bs.shifted_image(images[i], shift, i) for i in test_idx]
        acc[shift] = bs.zero_shot_accuracy(model, preprocess, tokenizer, ims, labels[test_idx])
    return acc


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    tiny.register_builtin_model()
    model, wall, cpu = train(args)
    print(f"trained in {wall:.1f} s wall, {cpu:.1f} s CPU")

    from safetensors.torch import save
    import open_clip

    args.out_dir.mkdir(parents=True, exist_ok=True)
    weights = args.out_dir / f"{tiny.BUILTIN_BACKBONE}.safetensors"
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    write_atomic(weights, lambda f: f.write(save(state, metadata={"format": "pt"})))  # readers never see half a file
    weights.chmod(0o644)
    # Measure what ships: reload the fp16 file through open_clip.
    shipped, _, _ = open_clip.create_model_and_transforms(tiny.BUILTIN_BACKBONE, pretrained=str(weights))
    acc = evaluate(shipped.eval())
    print("zero-shot accuracy (%): " + ", ".join(f"{k} {v:.1f}" for k, v in acc.items()))
    write_card(args, acc, (wall, cpu), weights, shipped)
    return 0


def write_card(
    args: argparse.Namespace, acc: dict[str, float], times: tuple[float, float], weights: Path, model: torch.nn.Module
) -> None:
    """Write the model card next to the weights."""
    n_params = sum(p.numel() for p in model.parameters())
    scale = float(model.logit_scale.detach().exp())
    images, labels = bs.load_digits_arrays()
    splits = bs.suite_splits(labels)
    card = f"""# craft-tiny: the built-in CLIP of `craft demo`

A tiny open_clip CLIP (config `craft-tiny.json`: vision ViT 2 layers x 64, 32 px, patch 8;
causal text transformer 2 layers x 64, 4 heads, context 16, argmax/EOT pooling, standard
49,408-token BPE tokenizer; joint embedding 64; {n_params / 1e6:.1f}M parameters, almost all the
token embedding). Weights: `craft-tiny.safetensors`, fp16, {weights.stat().st_size / 1e6:.1f} MB;
learned logit scale exp = {scale:.1f}.

## Data

scikit-learn's bundled `load_digits()` (1,797 8x8 grey images), upsampled bilinearly to 32 px
RGB and normalised by open_clip's eval preprocessing for this config (OpenAI mean/std).
`benchmark.datasets.builtin.digits_split` fixes (seed {bs.SPLIT_SEED}) {bs.N_MODEL_TRAIN} images for model
training; the other {len(labels) - bs.N_MODEL_TRAIN} are held out and are the only source of the
built-in suite (`ensure_builtin_suite`): per class {bs.TRAIN_PER_CLASS} train, {bs.VAL_PER_CLASS} val,
the rest test ({len(splits["test"])} test images), under four shifts.

## Training

CLIP contrastive loss, {args.steps} steps of batch {args.batch_size}, AdamW (lr {args.lr:g}, wd
{args.weight_decay:g}, {args.warmup} warmup steps, cosine), seed {args.seed}, no augmentation; captions
from {len(TEMPLATES)} templates: {", ".join(f'"{t}"' for t in TEMPLATES)}, class names
"zero".."nine". Training took {times[0]:.0f} s wall ({times[1]:.0f} s CPU) with {args.threads} torch
thread(s) on a 2-core machine (wall time grows when other jobs share the cores). The trained
tensors are bitwise reproducible for a given thread count.

## Zero-shot accuracy (template "{bs.TEMPLATE}", shipped fp16 weights)

| set | images | top-1 (%) |
|---|---|---|
| held-out clean digits | {len(labels) - bs.N_MODEL_TRAIN} | {acc["clean"]:.1f} |
| digits-noise (Gaussian noise, std {bs.NOISE_STD:g}) | {len(splits["test"])} | {acc["noise"]:.1f} |
| digits-invert (1 - x) | {len(splits["test"])} | {acc["invert"]:.1f} |
| digits-rotate (90 degrees) | {len(splits["test"])} | {acc["rotate"]:.1f} |
| digits-shift (2 digit pixels down-right) | {len(splits["test"])} | {acc["shift"]:.1f} |

Shifted figures are on each set's test split.

## Reproduce

    python scripts/train_builtin_model.py

retrains, overwrites the weights and this card, and prints the figures above. Checked by
`pytest tests/test_builtin_model.py`.
"""
    (args.out_dir / f"{tiny.BUILTIN_BACKBONE}.md").write_text(card)


if __name__ == "__main__":
    raise SystemExit(main())
