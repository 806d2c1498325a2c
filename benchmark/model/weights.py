"""Backbone weights as a first-class input: fetched explicitly, recorded with their sha256, found on the driver.

``craft weights fetch RN50:openai [--dir DIR]`` downloads through open_clip's pretrained machinery
(Hugging Face hub, else the release URL) and records the file, its size and sha256 in
``DIR/manifest.json``; without ``--dir`` the file stays in open_clip's standard cache (the Hugging
Face cache, or ``~/.cache/clip``) and the record goes to :func:`default_dir`. A sweep resolves every
backbone's weights to one local file on its driver, before Ray starts (:func:`resolve`): from the
config's ``weights:`` location (a folder, e.g. on shared storage, or a pyarrow URI such as
``s3://bucket/weights``, whose files are copied to this machine once, checked against the manifest),
else from this machine's records and caches, else (``CRAFT_ALLOW_DOWNLOAD=1``) by fetching them.
The serve room then stages that file to the model servers (:mod:`benchmark.serve.staging`), so an
autoscaled worker needs neither internet nor a manual step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.errors import UserError
from benchmark.files import file_sha256

MANIFEST = "manifest.json"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")


@dataclass(frozen=True)
class WeightsFile:
    """One backbone's weights as a file on this machine: ``weights`` is the tag or path the config gives."""

    backbone: str
    weights: str
    path: str
    sha256: str
    size: int
    found_in: str  # where it was found, for messages and `craft weights list`

    @property
    def suffix(self) -> str:
        return Path(self.path).suffix


def default_dir() -> Path:
    """``$CRAFT_BENCH_CACHE/weights``, else ``~/.cache/craft-bench/weights``: this machine's records and staged copies."""
    base = os.environ.get("CRAFT_BENCH_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "craft-bench") / "weights"


def staged_path(sha256: str, suffix: str) -> Path:
    """Where a copy of a file with this digest lives on this machine (named by content, so never stale)."""
    return default_dir() / "staged" / f"{sha256}{suffix}"


def is_checkpoint_path(weights: str) -> bool:
    """Weights given as a file path rather than a pretrained tag (as :mod:`benchmark.model.loading` tells them)."""
    return os.sep in weights or weights.endswith(CHECKPOINT_SUFFIXES)


def parse_spec(spec: str) -> tuple[str, str]:
    """``RN50:openai`` as (backbone, tag); a bare ``RN50`` takes ``openai`` where open_clip has it. UserError for
    a backbone or tag open_clip does not know."""
    import open_clip

    from benchmark.model.loading import PAPER_BACKBONES

    from benchmark.model.builtin import register_builtin_model

    register_builtin_model()
    name, _, tag = spec.partition(":")
    name = name.replace("/", "-")  # the paper's ViT-B/32 is open_clip's ViT-B-32
    if name not in open_clip.list_models():
        raise UserError(f"unknown backbone {name!r} in {spec!r}; paper backbones: {', '.join(PAPER_BACKBONES)} (any "
                        "name from open_clip.list_models() with a pretrained tag, as BACKBONE:TAG)")
    tags = open_clip.list_pretrained_tags_by_model(name)
    tag = tag or ("openai" if "openai" in tags else "")
    if tag not in tags:
        raise UserError(f"{name} has no pretrained tag {tag!r} to fetch; its tags: {', '.join(tags) or 'none'} "
                        f"(give BACKBONE:TAG, e.g. {name}:{tags[0] if tags else 'openai'})")
    return name, tag


# ----------------------------------------------------------------------------- manifests


def _is_uri(location: str) -> bool:
    return "://" in location


def read_manifest(location: str) -> dict[str, dict[str, Any]]:
    """The entries (``backbone:tag`` -> record) of the manifest in folder or URI ``location``; {} if it has none.
    UserError when a URI or folder given does not exist or the manifest does not parse."""
    text = None
    if _is_uri(location):
        import pyarrow.fs as pafs

        try:
            fs, base = pafs.FileSystem.from_uri(location)
            info = fs.get_file_info(base)
            if info.type == pafs.FileType.NotFound:
                raise UserError(f"weights location {location} does not exist (give a folder or URI holding the "
                                "manifest.json of craft weights fetch --dir)")
            if fs.get_file_info(f"{base}/{MANIFEST}").type == pafs.FileType.File:
                with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
                    text = f.read().decode("utf-8")
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds (no credentials, no scheme, ...)
            raise UserError(f"cannot read weights location {location}: {' '.join(str(exc).split())[:300]}") from None
    else:
        folder = Path(location)
        if not folder.is_dir():
            raise UserError(f"weights location {location} does not exist or is not a folder")
        if (folder / MANIFEST).is_file():
            text = (folder / MANIFEST).read_text()
    if text is None:
        return {}
    try:
        data = json.loads(text)
        return dict(data["weights"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{location}/{MANIFEST} is not a craft weights manifest; fetch again with craft weights fetch") from None


def _write_manifest(folder: Path, entries: dict[str, dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, prefix=".manifest.", delete=False) as f:
        json.dump({"format": 1, "weights": entries}, f, indent=1, sort_keys=True)
    os.replace(f.name, folder / MANIFEST)


# ----------------------------------------------------------------------------- fetch


def fetch(specs: list[str], folder: str | None = None) -> list[WeightsFile]:
    """Download the weights of ``specs`` (``BACKBONE[:TAG]``) through open_clip and record their sha256.

    Every spec is checked before any download; a failed download (no network) is one UserError and
    leaves nothing behind in ``folder``: files land under a temporary name there and are renamed,
    and the manifest is written last.
    """
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    pairs = list(dict.fromkeys(parse_spec(s) for s in specs))
    target = Path(folder) if folder else None
    if target is not None and target.exists() and not target.is_dir():
        raise UserError(f"--dir {folder} is a file, not a folder")
    record_dir = target or default_dir()
    created = target is not None and not target.exists()
    got: list[WeightsFile] = []
    try:
        for name, tag in pairs:
            got.append(_fetch_one(name, tag, get_pretrained_cfg(name, tag), download_pretrained, target, record_dir))
    except BaseException:  # what this call put in the folder goes; what was there stays
        for w in got:
            if target is not None:
                Path(w.path).unlink(missing_ok=True)
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise
    entries = read_manifest(str(record_dir)) if record_dir.is_dir() else {}
    for w in got:
        rel = os.path.relpath(w.path, record_dir) if target is not None else w.path
        entries[f"{w.backbone}:{w.weights}"] = {"path": rel, "sha256": w.sha256, "bytes": w.size,
                                                "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_manifest(record_dir, entries)
    return got


def _fetch_one(name: str, tag: str, cfg: dict[str, Any], download: Any, target: Path | None, record_dir: Path) -> WeightsFile:
    """One download: into open_clip's standard cache (no ``target``), or through a temporary folder in
    ``target`` to ``target/BACKBONE/TAG/FILE``."""
    _check_reachable(name, tag, cfg)
    tmp = tempfile.mkdtemp(prefix=".fetch-", dir=_existing_parent(target)) if target else None
    try:
        try:
            path = download(cfg, cache_dir=tmp)
        except Exception as exc:  # noqa: BLE001 - urllib, huggingface_hub and open_clip raise many kinds
            raise UserError(f"could not download the weights of {name}:{tag} ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())[:200]}); check the network, or copy a checkpoint file "
                            "and give its path as the backbone's weights") from None
        if not path or not os.path.isfile(path):
            raise UserError(f"open_clip gave no file for {name}:{tag}")
        path = os.path.realpath(path)
        if target is not None:
            final = target / name / tag / Path(path).name
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, final)
            path = str(final)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return WeightsFile(name, tag, path, file_sha256(path), os.path.getsize(path), str(record_dir))


def _source_url(cfg: dict[str, Any]) -> str:
    """The URL open_clip's ``download_pretrained`` will read first: the Hugging Face hub's where it has one."""
    if cfg.get("hf_hub"):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        return f"{endpoint}/{cfg['hf_hub']}"
    return cfg.get("url", "")


def _check_reachable(name: str, tag: str, cfg: dict[str, Any]) -> None:
    """UserError at once when the download's host does not answer (the hub's client would retry for a minute)."""
    import socket
    from urllib.parse import urlsplit

    url = _source_url(cfg)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return  # file:// and the like: nothing to reach
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=10):
            pass
    except OSError as exc:
        raise UserError(f"cannot fetch {name}:{tag}: {parts.hostname}:{port} does not answer ({exc.strerror or exc}); "
                        "run craft weights fetch on a machine with internet (--dir on shared storage), or give a "
                        "checkpoint path as the weights") from None


def _existing_parent(folder: Path) -> Path:
    """``folder``, created (a temporary download inside it then needs no cross-device move)."""
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----------------------------------------------------------------------------- resolve on the driver


def _entry_file(location: str, key: str, entry: dict[str, Any]) -> WeightsFile:
    """A manifest entry as a file on this machine: a local one checked against its sha256, a URI's copied
    here (once: the copy is named by its digest)."""
    backbone, _, tag = key.partition(":")
    sha, size, rel = entry["sha256"], int(entry["bytes"]), entry["path"]
    if not _is_uri(location):
        path = rel if os.path.isabs(rel) else os.path.join(location, rel)
        if not os.path.isfile(path):
            raise UserError(f"{location}/{MANIFEST} lists {key} at {path}, which does not exist; fetch it again")
        if os.path.getsize(path) != size or file_sha256(path) != sha:
            raise UserError(f"{path} ({key}) does not match the sha256 in {location}/{MANIFEST}; fetch it again")
        return WeightsFile(backbone, tag, path, sha, size, location)
    local = staged_path(sha, Path(rel).suffix)
    if not (local.is_file() and local.stat().st_size == size):
        import pyarrow.fs as pafs

        fs, base = pafs.FileSystem.from_uri(location)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{os.getpid()}")
        try:
            with fs.open_input_stream(f"{base}/{rel}") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            if file_sha256(tmp) != sha:
                raise UserError(f"{location}/{rel} ({key}) does not match the sha256 in its manifest; fetch it again")
            os.replace(tmp, local)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors
            raise UserError(f"cannot copy {location}/{rel} ({key}): {' '.join(str(exc).split())[:200]}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return WeightsFile(backbone, tag, str(local), sha, size, location)


def find_local(backbone: str, tag: str) -> WeightsFile | None:
    """This machine's file for a pretrained tag: in :func:`default_dir`'s records, else open_clip's caches."""
    key = f"{backbone}:{tag}"
    mine = default_dir()
    if mine.is_dir():
        entry = read_manifest(str(mine)).get(key)
        if entry is not None and os.path.isfile(entry["path"] if os.path.isabs(entry["path"]) else mine / entry["path"]):
            return _entry_file(str(mine), key, entry)
    from benchmark.model.loading import cached_pretrained

    path = cached_pretrained(backbone, tag)
    if path is None:
        return None
    path = os.path.realpath(path)
    return WeightsFile(backbone, tag, path, file_sha256(path), os.path.getsize(path), "open_clip cache")


def resolve(backbone: str, weights: str, location: str | None = None, allow_download: bool | None = None
            ) -> WeightsFile | None:
    """The local file that ``backbone:weights`` loads from, found on this machine (the driver) before Ray
    starts; None for ``builtin`` (shipped in the package on every node) and ``random``.

    UserError, naming what was tried and the command that fixes it, when there is none.
    """
    from benchmark.model.loading import BUILTIN, RANDOM

    if weights in (BUILTIN, RANDOM):
        return None
    if is_checkpoint_path(weights):
        if not os.path.isfile(weights):
            raise UserError(f"checkpoint {weights} (weights of {backbone}) does not exist")
        return WeightsFile(backbone, weights, weights, file_sha256(weights), os.path.getsize(weights), "checkpoint path")
    key = f"{backbone}:{weights}"
    if location:
        entry = read_manifest(location).get(key)
        if entry is None:
            raise UserError(f"weights location {location} has no {key} in its {MANIFEST}; add it with: "
                            f"craft weights fetch {key} --dir {location}")
        return _entry_file(location, key, entry)
    found = find_local(backbone, weights)
    if found is not None:
        return found
    if allow_download is None:
        allow_download = os.environ.get("CRAFT_ALLOW_DOWNLOAD", "") == "1"
    if allow_download:
        return fetch([key])[0]
    raise UserError(f"the weights of {key} are not on this machine (looked in {default_dir()}/{MANIFEST} and "
                    f"open_clip's caches) and downloads are off; fetch them once with: craft weights fetch {key} "
                    "(add --dir /shared/weights and set weights: /shared/weights for a cluster), or give a "
                    "checkpoint path as the weights")
