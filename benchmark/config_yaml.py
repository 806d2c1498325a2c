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
