"""``craft weights list`` (which backbones' weights are on this machine, and where) and ``craft weights
fetch BACKBONE[:TAG]... [--dir DIR]`` (download explicitly, sha256 recorded in DIR's manifest.json)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="which backbones' weights are present where (open_clip's caches, manifests)",
                        description="which backbones' weights are present where (open_clip's caches, manifests)")
    ls.add_argument("specs", nargs="*", metavar="BACKBONE[:TAG]",
                    help="what to look for (default: the paper's backbones' openai weights and every recorded one)")
    ls.add_argument("--dir", action="append", default=[], help="also a folder or URI with a manifest (repeatable)")
    fetch = sub.add_parser("fetch", help="download weights through open_clip, sha256 recorded in a manifest",
                           description="download weights through open_clip (needs the network), sha256 recorded in a manifest")
    fetch.add_argument("specs", nargs="+", metavar="BACKBONE[:TAG]", help="e.g. RN50 (its openai tag) or ViT-B-16:openai")
    fetch.add_argument("--dir", default=None,
                       help="put the files and manifest.json here, e.g. on shared storage for a cluster (then give "
                            "the sweep weights: DIR); default: open_clip's cache, recorded in $CRAFT_BENCH_CACHE/weights")


def run(args: argparse.Namespace) -> int:
    from benchmark.model import weights as W

    if args.action == "fetch":
        if args.dir and "://" in args.dir:
            from benchmark.errors import UserError

            raise UserError(f"--dir {args.dir}: fetch writes a local or mounted folder; copy it to the URI after "
                            "(e.g. aws s3 sync DIR s3://bucket/weights) and give the sweep weights: URI")
        for f in W.fetch(args.specs, args.dir):
            print(f"{f.backbone}:{f.weights} {f.path} {f.size:,} bytes sha256 {f.sha256} (recorded in {f.found_in}/{W.MANIFEST})")
        return 0
    return _list(args, W)


def _list(args: argparse.Namespace, W) -> int:
    from benchmark.model.builtin import BUILTIN_BACKBONE, builtin_model_paths
    from benchmark.model.loading import PAPER_BACKBONES, cached_pretrained

    places = [str(W.default_dir()), *args.dir]
    manifests = {p: (W.read_manifest(p) if "://" in p or os.path.isdir(p) else {}) for p in places}
    keys = [f"{n}:{t}" for n, t in map(W.parse_spec, args.specs)] if args.specs else [
        *(f"{b}:openai" for b in PAPER_BACKBONES), *(k for m in manifests.values() for k in m)]
    rows = [(f"{BUILTIN_BACKBONE}:builtin", "shipped in the package", str(builtin_model_paths()[1]))] if not args.specs else []
    for key in dict.fromkeys(keys):
        found = []
        for place, entries in manifests.items():
            if key in entries:
                e = entries[key]
                path = e["path"] if os.path.isabs(e["path"]) or "://" in place else os.path.join(place, e["path"])
                ok = "://" in place or os.path.isfile(path)
                found.append((key, f"manifest {place}" + ("" if ok else " (file missing)"),
                              f"{path} sha256 {e['sha256'][:12]}..."))
        backbone, _, tag = key.partition(":")
        cached = cached_pretrained(backbone, tag)
        if cached:
            found.append((key, "open_clip cache", os.path.realpath(cached)))
        rows += found or [(key, "missing", f"craft weights fetch {key}")]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    for r in rows:
        print(f"{r[0].ljust(width[0])}  {r[1].ljust(width[1])}  {r[2]}")
    return 0
