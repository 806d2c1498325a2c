"""The black box is a boundary: ``craft/`` never imports open_clip or ray (nor the benchmark that holds them)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CRAFT = Path(__file__).resolve().parents[1] / "craft"
FORBIDDEN = ("open_clip", "ray", "benchmark")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_module_of_craft_imports_the_model_side():
    offenders = {
        str(path.relative_to(CRAFT.parent)): sorted(m for m in _imported_modules(path) if m.split(".")[0] in FORBIDDEN)
        for path in sorted(CRAFT.rglob("*.py"))
    }
    assert len(offenders) >= 10  # the scan saw the package
    assert {k: v for k, v in offenders.items() if v} == {}


def test_importing_every_method_loads_neither_open_clip_nor_ray():
    code = (
        "import sys, craft.methods, craft.blackbox, craft.adapter, craft.zeroth_order\n"
        "from craft.methods import METHODS\n"
        "assert {'cbbt', 'coop', 'craft', 'bbt', 'zero_shot_clip'} <= set(METHODS)\n"
        "print(sorted(m for m in ('open_clip', 'ray', 'benchmark') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=CRAFT.parent)
    assert out.stdout.strip() == "[]"
