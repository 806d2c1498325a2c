"""The fast path's text-tower pass with each attention kernel torch offers, side by side.

Run from the repository root:

    python -m measurement.attention_backends [--backbone ViT-B-16] [--device cuda] [--json out.json]

On the H100 (docs/throughput.md, run D1) cuDNN's flash attention took 36% of a compiled pass's
device time: 21 calls a pass, each over prompts of about 20 tokens, whose tiles (64 x 128) it fills
a few percent, for well under 1% of the pass's arithmetic. This measures a pass (Caltech101's
shapes, prompts of 20 tokens, one generation's 40 candidates) with the kernel torch picks
(``auto``) and with each backend forced (``ClipEngine(attention=...)``, through
``torch.nn.attention.sdpa_kernel``): ``math`` (matmul, softmax, matmul), ``efficient``
(memory-efficient), ``cudnn`` and ``flash``. A backend that cannot
run a call (flash takes no mask) is reported with its error. Per backend: the pass's wall time,
the device's busy time and its attention kernels' share of it (``torch.profiler``), sequences/s,
and how far its features are from ``auto``'s. Eager engines: a compiled pass calls the same
attention kernels. On a CPU only ``math`` and ``flash`` exist (and no device time).
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmark.model.engine import ATTENTION_KERNELS, ClipEngine
from benchmark.model.loading import load_model
from measurement.loops import dataset_shapes, measure_raw, padded_classnames
from measurement.profile import profile_pass

ATTENTION_NAMES = ("sdpa", "attention", "fmha", "flash", "softmax", "bmm", "gemm")  # in device kernels' names


def measure(engines: dict[str, ClipEngine], classnames: list[str], contexts: torch.Tensor, repeats: int) -> dict[str, dict]:
    """Each backend's pass: its raw throughput (:func:`measurement.loops.measure_raw`: the
    backends' calls alternating, so that a change of load hits all alike), then a profile of each;
    features against the first backend's that runs."""
    raw = measure_raw(engines, classnames, contexts, {name: 1 for name in engines}, repeats)
    out: dict[str, dict] = {}
    ref = None
    for name, r in raw.items():
        if "error" in r:  # a backend that cannot run these calls
            out[name] = {"error": r["error"].splitlines()[0][:200]}
            continue
        engine = engines[name]
        feats = engine.text_features(contexts, engine.class_part(classnames)).float()
        ref = feats if ref is None else ref
        row = {"features_vs_first": float((feats - ref).norm() / ref.norm()),
               "seconds": statistics.median(r["seconds"]), "sequences_per_s": r["sequences_per_s"]}
        prof = profile_pass(engine, classnames, contexts)
        row |= {k: prof[k] for k in ("device_busy_s", "device_ops", "host_ops") if k in prof}
        top = prof.get("device_top") or []
        row["attention_share"] = sum(t["share"] for t in top if any(a in t["name"].lower() for a in ATTENTION_NAMES))
        row["device_top"] = top[:6]
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-16")
    p.add_argument("--weights", default=None, help="default: random (builtin for craft-tiny)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dataset", default="paper-shapes/caltech101")
    p.add_argument("--candidates", type=int, default=40)
    p.add_argument("--prompt-tokens", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backends", default=",".join(ATTENTION_KERNELS), help=f"comma-separated, of {', '.join(ATTENTION_KERNELS)}")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in names if b not in ATTENTION_KERNELS]
    if unknown or not names:
        p.error(f"--backends: unknown {unknown}; choose from {', '.join(ATTENTION_KERNELS)}")

    device = torch.device(args.device)
    weights = args.weights or ("builtin" if args.backbone == "craft-tiny" else "random")
    loaded = load_model(args.backbone, weights, device)
    engines = {name: ClipEngine(loaded, device, attention=name) for name in names}
    engine = engines[names[0]]
    shapes = dataset_shapes(args.dataset)
    p0 = engine.embed_words("a photo of a")
    classnames = padded_classnames(loaded.tokenizer, shapes.classes, args.prompt_tokens, p0.shape[0], engine.context_length)
    contexts = p0 + 0.05 * torch.randn(args.candidates, *p0.shape, generator=torch.Generator().manual_seed(0))
    result = {"backbone": args.backbone, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "dataset": shapes.key, "classes": shapes.classes, "candidates": args.candidates,
              "prompt_tokens": args.prompt_tokens, "fast_precision": "bf16" if engine.bf16 else "fp32", "backends": {}}
    result["backends"] = measure(engines, classnames, contexts, args.repeats)
    for name, row in result["backends"].items():
        if "error" in row:
            print(f"{name:>10}: error: {row['error']}")
            continue
        busy = (f", device busy {1e3 * row['device_busy_s']:.2f} ms, attention kernels {100 * row['attention_share']:.0f}%"
                if "device_busy_s" in row else "")
        print(f"{name:>10}: {row['sequences_per_s']:,.0f} seq/s, {1e3 * row['seconds']:.2f} ms a pass{busy}; "
              f"features {row['features_vs_first']:.1e} from {names[0]}'s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
