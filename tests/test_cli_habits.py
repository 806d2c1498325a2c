"""Habits of a command-line tool (issue 22, item 7): --version, -v/-q through logging, help on every flag."""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import pytest

from benchmark.cli import Parser, add_verbosity, main, subcommands
from benchmark.results.store import write_cell
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand
from tests.test_results_integrity import truncate
from tests.test_sweep_results import SWEEP, ok_row

REPO = Path(__file__).resolve().parents[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert re.match(r"craft-bench \S+ \(code \S+\), Python 3\.\d+", capsys.readouterr().out)


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser, as ``craft`` builds it, and the parsers nested in them (``craft cache clear``)."""
    found = []
    for name, (module, help_text) in subcommands().items():
        parser = Parser(prog=f"craft {name}", description=help_text)
        importlib.import_module(module).add_arguments(parser)
        add_verbosity(parser)
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found += [(f"{name} {sub}", p) for sub, p in action.choices.items()]
    return found


def test_every_flag_of_every_command_has_help() -> None:
    missing = [f"craft {name} {action.option_strings or action.dest}" for name, parser in parsers()
               for action in parser._actions if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert missing == []


def test_quiet_and_verbose_set_what_reaches_stderr_and_results_stay_on_stdout(tmp_path: Path, capsys) -> None:
    cells = expand(config_from_dict(SWEEP))[:2]
    paths = [write_cell(str(tmp_path), [ok_row(c, 40.0 + i)]) for i, c in enumerate(cells)]
    truncate(paths[1])
    for argv, warned in ((["table", str(tmp_path)], True), (["-q", "table", str(tmp_path)], True),
                         (["table", str(tmp_path), "-qq"], False), (["-qq", "table", str(tmp_path), "-v"], True)):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert "| Method" in out or "Method" in out, argv  # the table: stdout
        assert ("skipped damaged result file" in err) == warned, argv
        assert "skipped damaged" not in out


def test_docs_plot_optuna_example_names_its_out_folder() -> None:
    text = (REPO / "docs" / "tuning.md").read_text()
    examples = re.findall(r"craft plot --kind optuna[^`]*", text.replace("\n", " "))
    assert examples and all("--out" in e for e in examples)


def test_datasets_list_shows_coop_folders_and_links_coops_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["datasets", "list", "--suite", "coop11"]) == 0
    out = capsys.readouterr().out
    assert "caltech-101/" in out and "oxford_flowers/" in out and "fgvc_aircraft/" in out
    assert "github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md" in out
