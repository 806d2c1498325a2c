"""Reading a config file's YAML: safe loading, UTF-8, no repeated keys, errors in one short sentence.

Shared by ``craft bench`` and ``craft tune`` configs. A key given twice in one mapping is an
error (YAML's loaders keep the last silently, so a setting could be lost without a word).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import UserError

MAX_ERROR_CHARS = 300


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"key {key!r} appears twice", key_node.start_mark)
                seen[key] = True
            except TypeError:  # an unhashable key: PyYAML's own error follows
                break
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, where: str) -> Any:
    """The YAML document in ``path`` (None if empty); UserError naming ``where`` for bytes that are not
    UTF-8, YAML that does not parse, or a key repeated in a mapping."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{where} is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                        "save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:  # PyYAML composes nested lists and mappings recursively
        raise UserError(f"{where} nests its lists or mappings too deep for the YAML reader (hundreds of levels; "
                        "a config needs a few)") from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 3] + "..."
        raise UserError(f"{where} is not valid YAML: {message}") from None


def parse_overrides(pairs: list[str] | None, out: str | None = None, root: str | None = None) -> dict[str, Any]:
    """``--set KEY=VALUE`` pairs (each value read as YAML: ``3``, ``[1, 2]``, ``null``, ``s3://b/x``), then the
    ``--out`` and ``--root`` shorthands (taken as given, never as YAML), as one mapping of top-level keys.

    A command lays it over its config file before checking, so an override is checked exactly as the
    file's own key would be (an unknown key is refused there, naming ``--set``). UserError for a pair
    without ``=``, a value that is not YAML, or a key given twice.
    """
    found: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {pair!r} must be KEY=VALUE, e.g. --set out=s3://bucket/prefix or --set seeds=[1,2]")
        if key in found:
            raise UserError(f"--set gives key {key!r} twice")
        if key == "include":
            raise UserError("--set include=... is not taken: includes belong in the config file")
        found[key] = _yaml_value(text, f"--set {key}")
    for key, value in (("out", out), ("root", root)):
        if value is not None:
            if key in found:
                raise UserError(f"--{key} and --set {key}=... both given; give one")
            if not value:
                raise UserError(f"--{key} must be a folder path or URI, got ''")
            found[key] = value
    return found


def _yaml_value(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise UserError(f"{where}: the value nests too deep for the YAML reader") from None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())[:MAX_ERROR_CHARS]
        raise UserError(f"{where}: the value {text!r} is not valid YAML: {message}") from None
