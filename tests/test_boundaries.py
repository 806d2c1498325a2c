"""The rooms and their walls (README, Layout): who may import whom, checked on every import statement.

``craft/`` (the methods) never reaches the model side; the serve client a run imports loads no
open_clip; the product never imports the measurement package; and each room of ``benchmark/``
imports only the rooms below it. Lazy imports inside functions count: ``ast.walk`` sees them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# room (a folder or module, from the repository root) -> module prefixes it must not import
WALLS: dict[str, tuple[str, ...]] = {
    "craft": ("open_clip", "ray", "benchmark", "tuning", "measurement"),
    "benchmark": ("measurement",),
    "tuning": ("measurement",),
    "benchmark/datasets": ("benchmark.model", "benchmark.serve", "benchmark.sweep", "benchmark.report",
                           "benchmark.results", "tuning", "ray"),
    "benchmark/results": ("benchmark.model", "benchmark.serve", "benchmark.sweep", "benchmark.report", "tuning",
                          "open_clip", "torch", "ray"),
    "benchmark/model": ("benchmark.serve", "benchmark.sweep", "benchmark.report", "benchmark.results", "tuning", "ray"),
    "benchmark/serve": ("benchmark.sweep", "benchmark.report", "tuning"),
    "benchmark/sweep": ("tuning",),
    "benchmark/serve/client.py": ("open_clip", "benchmark.model"),
    "benchmark/track": ("benchmark.model", "benchmark.serve", "benchmark.sweep", "benchmark.report", "tuning",
                        "open_clip", "torch", "ray"),
    "benchmark/report": ("benchmark.model", "benchmark.serve", "benchmark.sweep", "tuning", "open_clip", "torch", "ray"),
}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _breaches(room: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    target = REPO / room
    paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert paths, f"{room}: nothing to scan"
    found = {}
    for path in paths:
        bad = sorted(m for m in _imported_modules(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if bad:
            found[str(path.relative_to(REPO))] = bad
    return found


@pytest.mark.parametrize("room", sorted(WALLS))
def test_no_room_imports_past_its_walls(room: str) -> None:
    assert _breaches(room, WALLS[room]) == {}


def test_the_scan_sees_a_breach(tmp_path: Path) -> None:
    """The scan itself: a lazy import inside a function is found."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from measurement import perf\n    import ray.util\n")
    assert _imported_modules(path) >= {"measurement", "measurement.perf", "ray.util"}


def _loaded_by_steps(steps: list[str]) -> list[list[str]]:
    """In one fresh interpreter, run each step of code in turn; after each, which watched modules are loaded.

    The steps only add imports, so what one step finds loaded it or an earlier one loaded."""
    watched = ('open_clip', 'ray', 'benchmark', 'measurement', 'measurement.perf')
    code = ["import sys"]
    for step in steps:
        code += [step, f"print(sorted(m for m in {watched!r} if m in sys.modules))"]
    out = subprocess.run([sys.executable, "-c", "\n".join(code)], capture_output=True, text=True, check=True, cwd=REPO)
    return [eval(line) for line in out.stdout.strip().splitlines()]  # list literals printed above


def test_what_each_side_loads():
    """The methods load neither open_clip nor Ray nor the benchmark; a run's client and cell runner load
    no open_clip; ``craft --help`` reads the measurement plugin's entry point (one small module), never
    the measurement code itself, which loads when its command runs."""
    methods, client, parser, perf = _loaded_by_steps([
        "import craft.methods, craft.blackbox, craft.adapter, craft.zeroth_order\n"
        "from craft.methods import METHODS\n"
        "assert {'cbbt', 'coop', 'craft', 'bbt', 'zero_shot_clip'} <= set(METHODS)",
        "import benchmark.serve.client, benchmark.sweep.run_cell",
        "from benchmark.cli import build_parser, subcommands\nbuild_parser()",
        "import importlib\nimportlib.import_module(subcommands()['perf'][0])",
    ])
    assert methods == []
    assert "open_clip" not in client
    assert "measurement.perf" not in parser
    assert "measurement.perf" in perf


def _import_graph() -> dict[str, set[str]]:
    """Module -> the product modules it imports (lazy imports included)."""
    modules = {}
    for top in ("benchmark", "craft", "tuning", "measurement"):
        for path in (REPO / top).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    return {m: {i for i in _imported_modules(p) if i in modules and i != m} for m, p in modules.items()}


def test_imports_go_one_way():
    """No import cycle, lazy imports counted: a module never needs one that needs it."""
    graph, state, cycles = _import_graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(path[path.index(n):] + [m, n] if n in path else [m, n])
            elif n not in state:
                visit(n, path + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_the_image_side_methods_are_inside_the_craft_room() -> None:
    """BPT-VLM, BlackVIP, LFA and SPSA live under craft/ and so are scanned by its wall (no open_clip, no Ray)."""
    scanned = {str(p.relative_to(REPO)) for p in (REPO / "craft").rglob("*.py")}
    assert {"craft/methods/bptvlm.py", "craft/methods/blackvip.py", "craft/methods/lfa.py", "craft/spsa.py"} <= scanned
    for name in ("craft/methods/bptvlm.py", "craft/methods/blackvip.py", "craft/methods/lfa.py", "craft/spsa.py"):
        assert not any(m.split(".")[0] in ("open_clip", "ray", "benchmark") for m in _imported_modules(REPO / name))
