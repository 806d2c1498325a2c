"""Issue 23's bad-input campaign, reproducible: every bad input through the real ``craft`` command.

``python -m measurement.bad_inputs [--out DIR] [--faults] [--jobs N] [--only TEXT] [--sample N] [--fresh]``

Builds, in a temporary folder, a catalogue of bad inputs (sweep and tune configs with every key
mutated, broken YAML, include chains, hyperparameters per method, report, dataset, cache and demo
flags), runs each through the ``craft`` command in a process of its own (this repository on
``PYTHONPATH``, a private ``CRAFT_BENCH_CACHE``, its own cwd) and classifies what came back.
With ``--fresh`` each process is ``sys.executable -m benchmark.cli ...`` (about 4 s each on 2
cores, mostly importing torch); by default it is a child forked from this script after it imported
the command's modules, which then runs ``benchmark.cli`` as ``__main__`` exactly as ``-m`` does
(about 0.3 s each: the ~590 cases take 2-3 minutes). Outcomes:

``one-sentence``  exit 2, stderr exactly one line ``craft <cmd>[ <action>]: error: ...``, no traceback
``reported``      exit 1 with the problem named on stdout, where a report is the designed answer
                  (``craft datasets check`` on a broken tree, ``craft results`` on damaged files,
                  ``craft cache verify`` on broken entries)
``traceback``     'Traceback' anywhere in the output
``accepted``      exit 0 (or a run that got as far as starting Ray): a bad input that passed
``other``         any other exit status or format

A few cases are inputs the product tolerates on purpose (a repeated method or seed counts once):
they must be accepted *and* give the right plan, else they count as silent wrong results.
Most cases stay on paths that never start Ray (``--dry-run``, checks before Ray). Those that would
start a run (``craft demo``, ``craft bench`` without ``--dry-run``) get ``RAY_TMPDIR`` pointing at a
file, so that a bad input that slipped through ends at "could not start a local Ray runtime"
instead of running, and is counted ``accepted``.

``--faults`` also runs faults on real tiny sweeps of the built-in suite (craft-tiny, digits, BBT
with a small budget, ``--num-cpus 1``): damaged and stray result files, SIGINT/SIGTERM/SIGKILL of
the driver mid-sweep, a read-only results folder, a deleted dataset image. After each, the rerun
must leave every cell present exactly once with the clean run's numbers.

Writes ``cases.json``, ``cases.csv`` (and ``faults.json``) under ``--out`` (default
``results/bad_inputs``); prints a table per category and the totals.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parent.parent

ONE = "one-sentence"
REPORTED = "reported"
TRACEBACK = "traceback"
ACCEPTED = "accepted"
OTHER = "other"
TOLERATED = "tolerated"  # a case's expectation: accepted on purpose, with the right plan
OUTCOMES = (ONE, REPORTED, TRACEBACK, ACCEPTED, OTHER)
RAY_GUARD_TEXT = "could not start a local Ray runtime"
DELETE = object()  # a mutation that removes the key

BENCH_BASE: dict[str, Any] = {
    "methods": ["zero_shot_clip", "bbt", "craft"], "datasets": ["digits_noise"], "shots": [2], "seeds": [1],
    "backbones": ["craft-tiny:builtin"],
}
BASE_CELLS = "3 cells:"  # what the base sweep's plan says


@dataclass
class Case:
    group: str
    name: str
    argv: list[str]
    expect: str = ONE  # ONE, REPORTED or TOLERATED
    ray_guard: bool = False
    timeout: float = 180.0
    plan_says: str | None = None  # TOLERATED: the plan (stdout) must contain this


@dataclass
class Result:
    group: str
    name: str
    argv: list[str]
    expect: str
    outcome: str
    ok: bool
    rc: int | None
    seconds: float
    line: str  # the error sentence, or what else came back (cut)


# ----------------------------------------------------------------------------- classifying


def error_line(cmd: str | None) -> re.Pattern[str]:
    """``craft <cmd>: error: ``, ``craft <cmd> <action>: error: `` (argparse's nested parsers), or
    ``craft: error: `` when no command was given."""
    if cmd is None or cmd.startswith("-"):
        return re.compile(r"^craft(?: [\w-]+)?: error: \S")
    return re.compile(rf"^craft(?: {re.escape(cmd)}(?: [\w-]+)?)?: error: \S")  # bare craft: an unknown command


def classify(argv: list[str], rc: int | None, stdout: str, stderr: str, *, ray_guard: bool = False,
             expect: str = ONE, plan_says: str | None = None) -> tuple[str, bool, str]:
    """(outcome, as expected, the line to show) for one run of ``craft argv``."""
    cmd = argv[0] if argv else None
    lines = stderr.strip("\n").splitlines()
    if "Traceback" in stdout or "Traceback" in stderr:
        last = next((ln for ln in reversed(lines) if ln.strip()), "")
        return TRACEBACK, False, last[:300]
    if rc is None:
        return OTHER, False, "timed out"
    if ray_guard and RAY_GUARD_TEXT in stderr:
        return ACCEPTED, False, "checks passed: it went on to start Ray"
    if rc == 0:
        if expect == TOLERATED:
            good = plan_says is None or plan_says in stdout
            return ACCEPTED, good, "accepted as designed" if good else f"accepted, but the output lacks {plan_says!r}"
        return ACCEPTED, False, (stdout.strip().splitlines() or [""])[0][:300]
    if rc == 2 and len(lines) == 1 and error_line(cmd).match(lines[0]):
        return ONE, expect == ONE, lines[0]
    if expect == REPORTED and rc == 1 and stdout.strip():
        return REPORTED, True, (stdout.strip().splitlines() or [""])[-1][:300]
    shown = " | ".join(lines[-3:])[:300] or (stdout.strip().splitlines() or [""])[-1][:300]
    return OTHER, False, f"exit {rc}, {len(lines)} stderr line(s): {shown}"


def child_env(cache: Path, ray_guard_file: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CRAFT_FEATURE_FINGERPRINT")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["CRAFT_BENCH_CACHE"] = str(cache)
    if ray_guard_file is not None:
        env["RAY_TMPDIR"] = str(ray_guard_file)
    return env


def run_case(case: Case, work: Path) -> Result:
    env = child_env(work / "cache", work / "ray-guard" if case.ray_guard else None)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmark.cli", *case.argv], capture_output=True, text=True,
                              errors="replace", cwd=work / "cwd", env=env, timeout=case.timeout, stdin=subprocess.DEVNULL)
        rc, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc, out, err = None, _text(exc.stdout), _text(exc.stderr)
    seconds = time.perf_counter() - start
    outcome, ok, line = classify(case.argv, rc, out, err, ray_guard=case.ray_guard, expect=case.expect,
                                 plan_says=case.plan_says)
    return Result(case.group, case.name, case.argv, case.expect, outcome, ok, rc, round(seconds, 2), line)


def _text(b: bytes | str | None) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


# ----------------------------------------------------------------------------- the catalogue


class Catalogue:
    """Writes the files of each case under ``work`` and collects the cases."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.cases: list[Case] = []
        self._n = 0

    def path(self, name: str) -> Path:
        self._n += 1
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60]
        return self.work / "configs" / f"{self._n:03d}-{slug}"

    def add(self, group: str, name: str, argv: list[str], **kw: Any) -> None:
        self.cases.append(Case(group, name.replace(str(self.work), "<tmp>"), argv, **kw))

    def yaml_file(self, name: str, data: Any) -> Path:
        p = self.path(name).with_suffix(".yaml")
        p.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return p

    def text_file(self, name: str, text: str | bytes) -> Path:
        p = self.path(name).with_suffix(".yaml")
        (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
        return p


def mutate(base: dict[str, Any], key: Any, value: Any) -> dict[str, Any]:
    out = dict(base)
    if value is DELETE:
        out.pop(key, None)
    else:
        out[key] = value
    return out


def label(key: Any, value: Any) -> str:
    if value is DELETE:
        return f"{key}: missing"
    text = json.dumps(value, default=str) if not isinstance(value, float) else repr(value)
    return f"{key}: {text[:50]}"


GENERIC = [None, "", 3.5, True, [], {}, [[1]]]  # wrong types and empties, for every key


def bench_key_mutations(work: Path) -> dict[str, list[Any]]:
    """Sweep config key -> bad values (benchmark/sweep/config.py KEYS and benchmark/serve/options.py KEYS)."""
    not_int = [v for v in GENERIC]
    return {
        "out": [*GENERIC, 7, DELETE],
        "root": ["", 3.5, True, [], {}, 7, str(work / "nowhere"), str(work / "a-file"), str(work / "empty-dir"),
                 str(work / "broken-root-no-split")],
        "methods": [*GENERIC, 7, ["nope"], ["BBT"], [None], [7], "nope", DELETE],
        "datasets": [*GENERIC, 7, ["nope"], ["imagenet_v2"], ["imagenet"], [None], "nope", DELETE],
        "eval_datasets": [None, "", 7, [], {"digits_noise": []}, {"digits_noise": "digits_rotate"},
                          {"digits_noise": ["nope"]}, {"nope": ["imagenet_v2"]}, {"digits_noise": ["digits_rotate"]},
                          {"imagenet": ["imagenet_v2"]}, {"digits_noise": [None]}],
        "shots": [*not_int, 0, -1, [0], [-1], [2**31], [2**63], [-(2**63)], [10**30], ["2"], [2.5], [True], [None], "x",
                  DELETE],
        "seeds": [*not_int, -1, [-1], [2**31], [2**63], [10**30], [1.0], ["1"], [True], [None], "x", DELETE],
        "backbones": [*GENERIC, 7, "craft-tiny:builtin", ["craft-tiny"], [":builtin"], ["craft-tiny:"], ["nope:openai"],
                      ["RN50:builtin"], ["craft-tiny:builtin", "craft-tiny:builtin"], {"craft-tiny": ""},
                      {"craft-tiny": 7}, [7], {"": "builtin"}, ["RN50:/nowhere/weights.pt"], ["RN50:no-such-tag"],
                      DELETE],
        "hparams": [None, "", 7, [], [[1]], {"nope": {}}, {"bbt": []}, {"bbt": None}, {"bbt": {"nope": {}}},
                    {"bbt": {"*": []}}, {"bbt": {"*": None}}, {7: {}}],
        "protocol": [None, "", 7, [], "nope", "OFFICIAL"],
        "runs_per_server": [None, "", 0, -1, "4", 2.5, True, [], 2**31, 2**63],
        "precision": [None, "", 7, [], "fp16", "FP32"],
        "colocate": [None, "", 1, "yes", "true", []],
        "attention": [None, "", 7, [], "nope"],
        "compile": [None, "", 7, [], "nope-mode", 1.5],
        "include": [7, "", [7], [""], True, {}, "nope_shipped", "missing.yaml", ["missing/x.yaml"], ["sub/"]],
    }


# method -> bad hyperparameters (craft/methods/*Config and their checks)
NAN, INF = float("nan"), float("inf")
BBT_BAD: list[dict[str, Any]] = [
    {"sigma": 0}, {"sigma": -1}, {"sigma": NAN}, {"sigma": INF}, {"sigma": "x"}, {"sigma": True}, {"sigma": None},
    {"bound": -1}, {"bound": NAN}, {"std": 0}, {"std": INF}, {"popsize": 1}, {"popsize": 0}, {"popsize": 2**31},
    {"popsize": 2**63}, {"popsize": 2.5}, {"popsize": "20"}, {"intrinsic_dim": 0}, {"intrinsic_dim": 2**31},
    {"ctx_init": 7}, {"ctx_init": ""}, {"budget": 0}, {"budget": -1}, {"budget": 10}, {"budget": 2**53},
    {"budget": 2**63}, {"budget": "400"}, {"budget": 400.5}, {"eval_every": 0}, {"cma_eigen_gap": 0},
    {"cma_step_rule": "nope"}, {"prompt_from": "nope"}, {"projection_init": "nope"},
    {"prompt_from": "mean", "cma_step_rule": "tpa"}, {"popsise": 20}, {"budget": 30, "popsize": 40},
]
CRAFT_BAD: list[dict[str, Any]] = [
    {"sigma": 0}, {"std": NAN}, {"popsize": 1}, {"budget": 0}, {"budget": 39}, {"lr": 0}, {"lr": INF},
    {"n": 0}, {"batch_size": 0}, {"hidden": 0}, {"weight": NAN}, {"weight": -1}, {"lambda_i": -1}, {"lambda_o": NAN},
    {"refine_views": "nope"}, {"refine_features": "nope"}, {"nn": 4}, {"hidden": 2**31},
]
CBBT_BAD: list[dict[str, Any]] = [
    {"q": 0}, {"mu": 0}, {"clip_norm": 0}, {"lr": 0}, {"lr": NAN}, {"adapter_ratio": 1.5}, {"adapter_on": "nope"},
    {"select": "nope"}, {"budget": 1}, {"budget": 0}, {"epochs": 0}, {"ctx_init": "  "}, {"batch_size": 0},
    {"two_sided": "yes"}, {"weight_decay": -1}, {"lr": INF}, {"mu": INF},
]
COOP_BAD: list[dict[str, Any]] = [
    {"n_ctx": 0}, {"momentum": 1}, {"lr": 0}, {"train_views": "nope"}, {"epochs": 0}, {"batch_size": 0}, {"lr": INF},
]
ZS_BAD: list[dict[str, Any]] = [{"budget": 10}]
HPARAMS_BAD = {"bbt": BBT_BAD, "craft": CRAFT_BAD, "cbbt": CBBT_BAD, "coop": COOP_BAD, "zero_shot_clip": ZS_BAD}


def add_bench_cases(cat: Catalogue) -> None:
    work = cat.work
    base = {"out": str(work / "bench-out"), **BENCH_BASE}
    for key, values in bench_key_mutations(work).items():
        for value in values:
            raw = mutate(base, key, value)
            if key == "include" and value in ("missing.yaml", ["missing/x.yaml"], ["sub/"]):
                (cat.work / "configs" / "sub").mkdir(exist_ok=True)
            cat.add(f"bench key {key}", label(key, value), ["bench", str(cat.yaml_file(f"{key}", raw)), "--dry-run"])
    # suite instead of datasets
    no_ds = mutate(base, "datasets", DELETE)
    for value in ["nope", 7, None, "", [], "all15"]:
        cat.add("bench key suite", label("suite", value),
                ["bench", str(cat.yaml_file("suite", {**no_ds, "suite": value})), "--dry-run"])
    cat.add("bench key suite", "datasets and suite both", ["bench", str(cat.yaml_file("both", {**base, "suite": "builtin"})),
                                                          "--dry-run"])
    # unknown keys
    for key in ["method", "Out", "seed", "budget", "popsize", 7, "", "runs-per-server"]:
        cat.add("bench unknown key", f"unknown key {key!r}", ["bench", str(cat.yaml_file("unknown", {**base, key: 1})),
                                                              "--dry-run"])
    # repeats the grid counts once (documented in benchmark/sweep/grid.py make_grid): accepted, right plan
    for key, value in [("methods", [*BENCH_BASE["methods"], "bbt"]), ("datasets", ["digits_noise", "digits_noise"]),
                       ("shots", [2, 2]), ("seeds", [1, 1])]:
        cat.add("bench repeats (tolerated)", label(key, value), ["bench", str(cat.yaml_file("dup", {**base, key: value})),
                                                                "--dry-run"], expect=TOLERATED, plan_says=BASE_CELLS)
    # hyperparameters per method
    for method, bads in HPARAMS_BAD.items():
        methods = BENCH_BASE["methods"] if method in BENCH_BASE["methods"] else [method]
        for values in bads:
            raw = {**base, "methods": methods, "hparams": {method: {"*": values}}}
            cat.add(f"bench hparams {method}", label(f"hparams.{method}", values),
                    ["bench", str(cat.yaml_file(f"hp-{method}", raw)), "--dry-run"])
    # a dataset's own setting that breaks only combined with '*'
    raw = {**base, "hparams": {"bbt": {"*": {"popsize": 20}, "digits_noise": {"budget": 10}}}}
    cat.add("bench hparams bbt", "'*' popsize 20 + digits_noise budget 10", ["bench", str(cat.yaml_file("hp", raw)), "--dry-run"])
    raw = {**base, "hparams": {"bbt": {"digits_rotate": {"popsize": 1}}}}
    cat.add("bench hparams bbt", "bad value for a dataset not in the sweep", ["bench", str(cat.yaml_file("hp", raw)), "--dry-run"])
    raw = {**base, "hparams": {"bbt": {"nope_ds": {"popsize": 20}}}}
    cat.add("bench hparams bbt", "unknown dataset under hparams.bbt", ["bench", str(cat.yaml_file("hp", raw)), "--dry-run"])
    add_yaml_cases(cat, base)
    # flags
    for flags in (["--num-cpus", "0"], ["--num-cpus", "-1"], ["--num-cpus", "x"], ["--gpus", "-1"], ["--gpus", "x"],
                  ["--num-cpus", "2", "--address", "127.0.0.1:1"], ["--address", "not-an-address"],
                  ["--address", "127.0.0.1:1"], ["--bogus-flag"]):
        own = str(cat.yaml_file("flags", {**base, "out": str(work / f"bench-out-{cat._n}")}))  # one lock each
        cat.add("bench flags", " ".join(flags), ["bench", own, *flags], ray_guard=True)
    cat.add("bench flags", "no config", ["bench"])
    cat.add("bench flags", "config is a folder", ["bench", str(work / "empty-dir"), "--dry-run"])
    cat.add("bench flags", "config does not exist", ["bench", str(work / "nowhere.yaml"), "--dry-run"])
    fifo = work / "a-fifo.yaml"
    os.mkfifo(fifo)
    cat.add("bench flags", "config is a FIFO", ["bench", str(fifo), "--dry-run"], timeout=60)
    # out that cannot be written, found before Ray starts (no --dry-run: RAY_TMPDIR guard)
    for name, out in [("out is a file", work / "a-file"), ("out under a file", work / "a-file" / "r"),
                      ("out name too long", work / ("x" * 300)), ("out an unknown URI scheme", "nosuchfs://bucket/x")]:
        cat.add("bench out", name, ["bench", str(cat.yaml_file("out", {**base, "out": str(out)}))], ray_guard=True)
    cat.add("bench out", "out 5000 characters (dry run)",
            ["bench", str(cat.yaml_file("out", {**base, "out": str(work / ("y" * 5000))})), "--dry-run"])
    cat.add("bench out", "out an unknown URI scheme (dry run)",
            ["bench", str(cat.yaml_file("out", {**base, "out": "nosuchfs://bucket/x"})), "--dry-run"])
    # a data root whose files are broken, found before Ray starts
    for broken in ("broken-root-bad-json", "broken-root-no-images", "broken-root-traversal"):
        raw = {**base, "root": str(work / broken)}
        cat.add("bench root", broken.removeprefix("broken-root-"), ["bench", str(cat.yaml_file("root", raw)), "--dry-run"])


def add_yaml_cases(cat: Catalogue, base: dict[str, Any]) -> None:
    good = yaml.safe_dump(base, sort_keys=False)
    no_seeds = yaml.safe_dump({k: v for k, v in base.items() if k != "seeds"}, sort_keys=False)
    texts: dict[str, str | bytes] = {
        "syntax error (unclosed bracket)": good + "methods: [bbt\n",
        "tab indentation": good.replace("\nmethods:", "\n\tmethods:"),
        "not UTF-8 (Latin-1 byte)": good.encode() + b"# caf\xe9\n",
        "UTF-16 with a BOM": good.encode("utf-16"),
        "NUL byte": good + "\0\n",
        "key given twice": good + "seeds: [2]\n",
        "top level a list": "- out: r\n- methods: [bbt]\n",
        "top level a scalar": "just text\n",
        "empty file": "",
        "comments only": "# nothing here\n",
        "two documents": good + "---\nseeds: [2]\n",
        "python object tag": good + "x: !!python/object/apply:os.system [\"true\"]\n",
        "unknown tag": good + "extra: !custom 1\n",
        "binary garbage": bytes(range(256)) * 4,
        "10000-deep flow list": "out: r\nseeds: " + "[" * 10000 + "]" * 10000 + "\n",
        "5000-deep flow mapping": "out: r\nhparams: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n",
        "2000-deep block mapping": "out: r\nhparams:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2000)) + " " * 2001 + "1\n",
        "mapping key a list": good + "[a, b]: 1\n",
        "alias bomb (9**9 items)": no_seeds + "seeds: [" + ", ".join(
            ["&a [x, x, x, x, x, x, x, x, x]"] + [f"&{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")]) + "]\n",
        "a megabyte-long line": good + "x: " + "a" * 1_000_000 + "\n",
    }
    for name, text in texts.items():
        cat.add("bench yaml", name, ["bench", str(cat.text_file("yaml", text)), "--dry-run"])
    # include chains
    folder = cat.work / "configs" / "chain"
    folder.mkdir()
    for i in range(1500):
        (folder / f"c{i}.yaml").write_text(f"include: [c{i + 1}.yaml]\n" if i < 1499 else "seeds: [1]\n")
    cat.add("bench include", "1500-deep include chain", ["bench", str(folder / "c0.yaml"), "--dry-run"])
    a, b = cat.path("cycle-a").with_suffix(".yaml"), cat.path("cycle-b").with_suffix(".yaml")
    a.write_text(f"include: [{b.name}]\n" + good)
    b.write_text(f"include: [{a.name}]\n")
    cat.add("bench include", "include cycle", ["bench", str(a), "--dry-run"])
    me = cat.path("self").with_suffix(".yaml")
    me.write_text(f"include: [{me.name}]\n" + good)
    cat.add("bench include", "includes itself", ["bench", str(me), "--dry-run"])
    for name, inc_text in [("a list", "- 1\n"), ("a bad key", "nope: 1\n"), ("bad hyperparameter",
                           "hparams: {bbt: {'*': {popsize: 1}}}\n"), ("not UTF-8", b"seeds: [1] # \xff\n"),
                           ("bad YAML", "seeds: [1\n")]:
        inc = cat.text_file("inc", inc_text)
        cat.add("bench include", f"included file with {name}", ["bench", str(cat.text_file("incl", f"include: [{inc.name}]\n" + good)),
                                                               "--dry-run"])
    inc = cat.work / "configs" / "a-folder.yaml"
    inc.mkdir()
    cat.add("bench include", "include a folder named .yaml",
            ["bench", str(cat.text_file("incl", f"include: [{inc.name}]\n" + good)), "--dry-run"])


TUNE_BASE_FILE = REPO / "configs" / "tune_builtin.yaml"


def tune_key_mutations(work: Path) -> dict[str, list[Any]]:
    """Tune config key -> bad values (tuning/config.py KEYS)."""
    return {
        "name": [None, "", 7, "a b", "../x", "x/y", []],
        "methods": [*GENERIC, 7, ["nope"], ["zero_shot_clip"], ["coop", "nope"], DELETE],
        "datasets": [*GENERIC, ["nope"], ["imagenet_v2"], ["imagenet"], DELETE],
        "shots": [None, "", 0, [0], [-1], [2**31], [2**63], ["16"], [1.5], []],
        "backbones": [None, "", [], ["nope:x"], ["craft-tiny:builtin", "craft-tiny:other"], ["craft-tiny"],
                      {"craft-tiny": 7}, DELETE],
        "root": ["", 7, [], str(work / "nowhere"), str(work / "a-file"), str(work / "empty-dir")],
        "out": [None, "", 7, [], "nosuchfs://x/y", str(work / "a-file" / "t")],
        "storage": ["", 7, [], str(work / "empty-dir"), str(work / "nowhere" / "j.journal"),
                    f"sqlite:///{work}/nowhere/x.db", "nosuchdb://x", str(work / "garbage.journal")],
        "hparams": [None, "", 7, [], {"bbt": {"*": {"sigma": 1}}}, {"craft": {"digits_noise": {"sigma": 1}}},
                    {"craft": {"*": {"eval_every": 5}}}, {"craft": {"*": {"nope": 1}}}, {"craft": {"*": {"budget": 0}}},
                    {"craft": {"*": {"budget": 39}}}, {"craft": {"*": {"sigma": 0}}}],
        "space": [7, "", [], {"bbt": {"sigma": {"type": "float", "low": 0.1, "high": 1}}}, {"craft": {}},
                  {"craft": {"nope": {"type": "float", "low": 0.1, "high": 1}}},
                  {"craft": {"sigma": {"type": "float", "low": 1, "high": 0.1}}},
                  {"craft": {"sigma": {"type": "float", "low": 0, "high": 1, "log": True}}},
                  {"craft": {"sigma": {"type": "float", "low": -1, "high": 1}}},
                  {"craft": {"sigma": {"type": "nope", "low": 0.1, "high": 1}}},
                  {"craft": {"sigma": {"type": "float", "low": NAN, "high": 1}}},
                  {"craft": {"sigma": "x"}}, {"craft": {"n": {"type": "int", "low": 1.5, "high": 4}}},
                  {"craft": {"n": {"type": "categorical", "choices": []}}},
                  {"craft": {"n": {"type": "categorical", "choices": [1, 1]}}},
                  {"craft": {"budget": {"type": "int", "low": 100, "high": 1000}}},
                  {"craft": {"sigma": {"type": "float", "low": 0.1, "high": 1, "when": {"nope": 1}}}}],
        "trials": [None, "", 0, -1, "30", 2.5, True, []],
        "max_concurrent_trials": [None, 0, -1, "2", 2.5],
        "sampler": [None, "", 7, "nope", "TPE"],
        "seed": [None, -1, 2**31, 2**63, "0", 1.5],
        "pruning": ["yes", 7, [], {"grace_fraction": 0}, {"grace_fraction": 1.5}, {"grace_fraction": NAN},
                    {"reduction_factor": 1}, {"reduction_factor": 2.5}, {"nope": 1}],
        "warm_start": [None, "yes", 1, []],
        "search_seeds": [None, [], [-1], [2**31], ["1"], "x"],
        "test_seeds": [None, [], [-1], [2**31], ["1"], "x", [1.5]],
        "pool": ["dataset", 7, ["nope"], [None], {}],
    }


def add_tune_cases(cat: Catalogue) -> None:
    work = cat.work
    base = yaml.safe_load(TUNE_BASE_FILE.read_text())
    base["out"] = str(work / "tune-out")
    (work / "garbage.journal").write_text('{"op_code": 0, "worker_id": garbage\nnot json\n')
    for key, values in tune_key_mutations(work).items():
        for value in values:
            cat.add(f"tune key {key}", label(key, value), ["tune", str(cat.yaml_file(f"tune-{key}", mutate(base, key, value))),
                                                          "--dry-run"])
    for key in ["method", "Trials", "seeds", "budget", 7]:
        cat.add("tune unknown key", f"unknown key {key!r}", ["tune", str(cat.yaml_file("tune-unknown", {**base, key: 1})),
                                                             "--dry-run"])
    good = yaml.safe_dump(base, sort_keys=False)
    for name, text in {"syntax error": good + "trials: [3\n", "not UTF-8": good.encode() + b"# \xe9\n",
                       "key given twice": good + "trials: 3\n", "top level a list": "- 1\n", "empty file": "",
                       "10000-deep flow list": "trials: " + "[" * 10000 + "]" * 10000 + "\n"}.items():
        cat.add("tune yaml", name, ["tune", str(cat.text_file("tune-yaml", text)), "--dry-run"])
    def own() -> str:  # a search folder (and storage lock) of its own
        return str(cat.yaml_file("tune-flags", {**base, "out": str(work / f"tune-out-{cat._n}")}))

    cat.add("tune flags", "config does not exist", ["tune", str(work / "nowhere.yaml"), "--dry-run"])
    cat.add("tune flags", "--export with no search yet", ["tune", own(), "--export", str(work / "nowhere" / "x.yaml")])
    cat.add("tune flags", "--num-cpus 0", ["tune", own(), "--num-cpus", "0"], ray_guard=True)
    cat.add("tune flags", "--num-cpus -1", ["tune", own(), "--num-cpus", "-1"], ray_guard=True)
    cat.add("tune flags", "--num-cpus x", ["tune", own(), "--num-cpus", "x"])
    cat.add("tune flags", "--address not-an-address", ["tune", own(), "--address", "not-an-address"], ray_guard=True)
    cat.add("tune flags", "--address 127.0.0.1:1", ["tune", own(), "--address", "127.0.0.1:1"], ray_guard=True)


def add_report_cases(cat: Catalogue, results: Path) -> None:
    work = cat.work
    missing, empty, afile = str(work / "nowhere"), str(work / "empty-dir"), str(work / "a-file")
    fake = work / "fake-results"
    (fake / "bbt" / "digits_noise").mkdir(parents=True)
    (fake / "bbt" / "digits_noise" / "0123abcd.parquet").write_bytes(b"PAR1 not really parquet")
    fake_file = work / "fake.parquet"
    fake_file.write_bytes(b"PAR1 garbage PAR1")
    r = str(results)
    table = {
        "missing folder": [missing], "empty folder": [empty], "a text file": [afile], "a folder of damaged files": [str(fake)],
        "a damaged .parquet file": [str(fake_file)], "--kind nope": [r, "--kind", "nope"], "--format nope": [r, "--format", "nope"],
        "--backbone nope": [r, "--backbone", "nope"], "--datasets nope": [r, "--datasets", "nope"],
        "--shots 0": [r, "--shots", "0"], "--shots x": [r, "--shots", "x"], "--shots 99 (none)": [r, "--shots", "99"],
        "RESULTS and --published": [r, "--published"], "--published --kind cost": ["--published", "--kind", "cost"],
        "no arguments": [], "--out in a missing folder of a file": [r, "--out", str(work / "a-file" / "t.md")],
        "--out a folder": [r, "--out", empty], "unknown URI scheme": ["nosuchfs://x/y"],
    }
    for name, argv in table.items():
        cat.add("table", name, ["table", *argv])
    out = str(work / "plots")
    plot = {
        "missing folder": [missing, "--kind", "shots", "--out", out], "empty folder": [empty, "--kind", "shots", "--out", out],
        "a text file": [afile, "--kind", "queries", "--out", out], "--kind nope": [r, "--kind", "nope", "--out", out],
        "no --kind": [r, "--out", out], "no --out": [r, "--kind", "shots"],
        "--kind optuna without --storage": ["--kind", "optuna", "--out", out],
        "--kind optuna, missing storage": ["--kind", "optuna", "--out", out, "--storage", str(work / "nowhere.journal")],
        "--kind optuna, garbage journal": ["--kind", "optuna", "--out", out, "--storage", str(work / "garbage.journal")],
        "--backbone nope": [r, "--kind", "shots", "--out", out, "--backbone", "nope"],
        "--datasets nope": [r, "--kind", "shots", "--out", out, "--datasets", "nope"],
        "--shots with --kind shots": [r, "--kind", "shots", "--out", out, "--shots", "2"],
        "--shots 0 with --kind queries": [r, "--kind", "queries", "--out", out, "--shots", "0"],
        "--out a file": [r, "--kind", "shots", "--out", afile],
        "--out under a file": [r, "--kind", "shots", "--out", str(work / "a-file" / "plots")],
        "no results folder": ["--kind", "shots", "--out", out],
        "a folder of damaged files": [str(fake), "--kind", "shots", "--out", out],
    }
    for name, argv in plot.items():
        cat.add("plot", name, ["plot", *argv])
    for name, argv, expect in [("missing folder", [missing], ONE), ("a text file", [afile], ONE),
                               ("no argument", [], ONE), ("unknown URI scheme", ["nosuchfs://x/y"], ONE),
                               ("damaged result files", [str(fake)], REPORTED)]:
        cat.add("results", name, ["results", *argv], expect=expect)


def add_dataset_cases(cat: Catalogue) -> None:
    work = cat.work
    ok_root = str(work / "cache" / "builtin")
    cases: dict[str, tuple[list[str], str]] = {
        "missing root": (["check", "--root", str(work / "nowhere")], ONE),
        "root is a file": (["check", "--root", str(work / "a-file")], ONE),
        "root given as ''": (["check", "--root", ""], ONE),
        "unknown dataset name": (["check", "--root", ok_root, "nope"], ONE),
        "--verify-images x": (["check", "--root", ok_root, "--verify-images", "x"], ONE),
        "--verify-images -1": (["check", "--root", ok_root, "--verify-images", "-1"], ONE),
        "no --root": (["check"], ONE),
        "list --suite nope": (["list", "--suite", "nope"], ONE),
        "unknown action": (["nope"], ONE),
        "no action": ([], ONE),
        "empty root": (["check", "--root", str(work / "empty-dir"), "digits_noise"], REPORTED),
    }
    for broken in ("no-split", "bad-json", "no-images", "traversal", "truncated-image", "missing-image",
                   "split-not-a-mapping", "label-out-of-range"):
        cases[f"broken tree: {broken}"] = (["check", "--root", str(work / f"broken-root-{broken}"), "digits_noise",
                                             "--verify-images", "all"], REPORTED)
    for name, (argv, expect) in cases.items():
        cat.add("datasets", name, ["datasets", *argv], expect=expect)


def add_cache_cases(cat: Catalogue) -> None:
    work = cat.work
    junk = work / "junk-cache"
    junk.mkdir()
    (junk / "0123456789abcdef.safetensors").write_bytes(b"not safetensors")
    (junk / "0123456789abcdef.json").write_text("{not json")
    cases: dict[str, tuple[list[str], str]] = {
        "no action": ([], ONE), "unknown action": (["nope"], ONE),
        "clear --older-than -1": (["clear", "--older-than", "-1", "--dir", str(junk)], ONE),
        "clear --older-than soon": (["clear", "--older-than", "soon", "--dir", str(junk)], ONE),
        "clear --older-than nan": (["clear", "--older-than", "nan", "--dir", str(junk)], ONE),
        "clear --older-than inf": (["clear", "--older-than", "inf", "--dir", str(junk)], ONE),
        "verify --dir a file": (["verify", "--dir", str(work / "a-file")], ONE),
        "list --dir missing": (["list", "--dir", str(work / "nowhere")], ONE),
        "clear --dir missing": (["clear", "--dir", str(work / "nowhere")], ONE),
        "list --bogus": (["list", "--bogus"], ONE),
        "verify broken entries": (["verify", "--dir", str(junk)], REPORTED),
    }
    for name, (argv, expect) in cases.items():
        cat.add("cache", name, ["cache", *argv], expect=expect)


def add_demo_cases(cat: Catalogue) -> None:
    flags = [["--shots", "0"], ["--shots", "-1"], ["--shots", "x"], ["--shots", str(2**31)], ["--seeds", "-1"],
             ["--seeds", "x"], ["--seeds", str(2**31)], ["--seeds"], ["--datasets", "nope"], ["--datasets", "imagenet"],
             ["--datasets", "imagenet_v2"], ["--methods", "nope"], ["--num-cpus", "0"], ["--num-cpus", "-1"],
             ["--protocol", "nope"], ["--out", ""], ["--out", str(cat.work / "a-file")]]
    for i, f in enumerate(flags):
        out = str(cat.work / f"demo-out-{i}")  # a results folder each: cases run side by side
        argv = ["demo", *([] if f[0] == "--out" else ["--out", out]), *f, "--no-progress"]
        if f[0] != "--shots":
            argv += ["--shots", "2"]
        cat.add("demo", " ".join(f) or "(none)", argv, ray_guard=True)


def add_cli_cases(cat: Catalogue) -> None:
    cat.add("cli", "unknown command", ["nope"])
    cat.add("cli", "no command", [])
    cat.add("cli", "unknown top-level flag", ["--nope"])


# ----------------------------------------------------------------------------- fixtures


def make_fixtures(work: Path) -> Path:
    """The built-in suite in the private cache, broken copies of it as data roots, a few files; returns
    a small results folder (synthetic rows) for the report cases."""
    from benchmark.datasets.builtin import ensure_builtin_suite

    for d in ("cwd", "configs", "empty-dir"):
        (work / d).mkdir(parents=True, exist_ok=True)
    (work / "a-file").write_text("a file, not a folder\n")
    (work / "ray-guard").write_text("RAY_TMPDIR points here: a file, so a run that gets as far as Ray stops there\n")
    suite = ensure_builtin_suite(work / "cache" / "builtin")
    src = suite / "digits-noise"
    split_name = next(p.name for p in src.glob("split_*.json"))

    def copy(name: str) -> Path:
        dst = work / f"broken-root-{name}" / "digits-noise"
        shutil.copytree(src, dst, symlinks=True)
        return dst

    copy("no-split").joinpath(split_name).unlink()
    copy("bad-json").joinpath(split_name).write_text("{not json")
    shutil.rmtree(copy("no-images") / "images")
    d = copy("traversal")
    split = json.loads((d / split_name).read_text())
    split["train"][0][0] = "../../../../etc/passwd"
    (d / split_name).write_text(json.dumps(split))
    d = copy("truncated-image")
    first = sorted((d / "images").iterdir())[0]
    first.write_bytes(first.read_bytes()[:20])
    d = copy("missing-image")
    sorted((d / "images").iterdir())[0].unlink()
    copy("split-not-a-mapping").joinpath(split_name).write_text("[1, 2, 3]")
    d = copy("label-out-of-range")
    split = json.loads((d / split_name).read_text())
    split["train"][0][1] = 99
    (d / split_name).write_text(json.dumps(split))
    return synthetic_results(work / "results-ok")


def synthetic_results(out: Path) -> Path:
    """A results folder with one ok row per cell of the base sweep (numbers made up): for report flags."""
    from benchmark.results.store import write_cell
    from benchmark.sweep.config import config_from_dict
    from benchmark.sweep.plan import expand

    for cell in expand(config_from_dict({**BENCH_BASE, "out": str(out)})):
        write_cell(str(out), [{"cell_id": cell.cell_id, "status": "ok", "method": cell.method, "dataset": cell.dataset,
                               "eval_dataset": cell.dataset, "backbone": cell.backbone, "weights": cell.weights,
                               "shots": cell.shots, "seed": cell.seed, "hparams": cell.full_hparams(), "queries": 400,
                               "top1_test": 50.0}])
    return out


def build_catalogue(work: Path) -> tuple[list[Case], list[Case]]:
    """(controls, bad inputs): the controls are valid inputs that must pass, so that the bases are sound."""
    results = make_fixtures(work)
    cat = Catalogue(work)
    base = {"out": str(work / "bench-out"), **BENCH_BASE}
    tune = yaml.safe_load(TUNE_BASE_FILE.read_text())
    tune["out"] = str(work / "tune-out")
    controls = [
        Case("control", "bench base config", ["bench", str(cat.yaml_file("control", base)), "--dry-run"], expect=TOLERATED,
             plan_says=BASE_CELLS),
        Case("control", "tune base config", ["tune", str(cat.yaml_file("control-tune", tune)), "--dry-run"], expect=TOLERATED),
        Case("control", "table of the report fixture", ["table", str(results)], expect=TOLERATED),
        Case("control", "datasets check of the built-in suite",
             ["datasets", "check", "--root", str(work / "cache" / "builtin"), "digits_noise"], expect=TOLERATED),
    ]
    add_bench_cases(cat)
    add_tune_cases(cat)
    add_report_cases(cat, results)
    add_dataset_cases(cat)
    add_cache_cases(cat)
    add_demo_cases(cat)
    add_cli_cases(cat)
    return controls, cat.cases


def sample(cases: list[Case], n: int) -> list[Case]:
    """``n`` cases spread over the catalogue (one of every ``len/n``), for a quick test."""
    step = max(1, len(cases) // n)
    return cases[::step][:n]


def run_cases(cases: list[Case], work: Path, jobs: int, progress: bool = True, fresh: bool = False) -> list[Result]:
    """Every case through the CLI, ``jobs`` at once: each in a fresh interpreter (``fresh``), else in a
    child forked from this process with the CLI's modules already imported (the same code, started fast)."""
    done: dict[int, Result] = {}

    def show(n: int, r: Result) -> None:
        if progress:
            mark = "" if r.ok else "   <-- " + r.outcome
            print(f"[{n:3d}/{len(cases)}] {r.outcome:12s} {r.seconds:5.1f}s  {r.group}: {r.name}{mark}",
                  file=sys.stderr, flush=True)

    if fresh or not hasattr(os, "fork"):
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_case, c, work): i for i, c in enumerate(cases)}
            for n, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                done[futures[fut]] = fut.result()
                show(n, done[futures[fut]])
    else:
        preload()
        for n, (i, r) in enumerate(run_forked(cases, work, jobs), 1):
            done[i] = r
            show(n, r)
    return [done[i] for i in range(len(cases))]


# What ``python -m benchmark.cli`` imports for the commands of the catalogue: imported once here, so
# that each forked case starts in a fraction of a second instead of importing torch again.
PRELOAD = ("benchmark.errors", "benchmark.sweep.cli", "benchmark.sweep.config", "benchmark.sweep.plan", "benchmark.sweep.demo",
           "benchmark.sweep.runner", "tuning.cli", "tuning.config", "tuning.storage", "benchmark.report.tables_cli",
           "benchmark.report.plots_cli", "benchmark.report.load", "benchmark.report.render", "benchmark.results.cli",
           "benchmark.datasets.cli", "benchmark.datasets.check", "benchmark.model.cache_cli", "benchmark.model.task",
           "optuna")


def preload() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)


def run_forked(cases: list[Case], work: Path, jobs: int) -> Any:
    """Yield (index, Result) as forked children end; no threads here, so forking is safe."""
    queue = list(enumerate(cases))
    running: dict[int, tuple[int, float, Path, Path]] = {}
    (work / "io").mkdir(exist_ok=True)
    while queue or running:
        while queue and len(running) < jobs:
            i, case = queue.pop(0)
            out_p, err_p = work / "io" / f"{i}.out", work / "io" / f"{i}.err"
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(case, work, out_p, err_p)  # never returns
            running[pid] = (i, time.perf_counter(), out_p, err_p)
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            now = time.perf_counter()
            for cpid, (i, start, _, _) in list(running.items()):
                if now - start > cases[i].timeout:
                    _kill_group(cpid)
            time.sleep(0.02)
            continue
        if pid not in running:
            continue
        i, start, out_p, err_p = running.pop(pid)
        _kill_group(pid)  # whatever the case left running (it should leave nothing)
        case = cases[i]
        rc: int | None = os.waitstatus_to_exitcode(status)
        if rc == -signal.SIGKILL and time.perf_counter() - start > case.timeout:
            rc = None
        out, err = out_p.read_text(errors="replace"), err_p.read_text(errors="replace")
        outcome, ok, line = classify(case.argv, rc, out, err, ray_guard=case.ray_guard, expect=case.expect,
                                     plan_says=case.plan_says)
        yield i, Result(case.group, case.name, case.argv, case.expect, outcome, ok, rc,
                        round(time.perf_counter() - start, 2), line)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child(case: Case, work: Path, out_p: Path, err_p: Path) -> None:
    """In a forked child: run ``craft argv`` as ``python -m benchmark.cli`` would, then exit with its status."""
    code = 1
    try:
        os.setsid()  # its own group: a timeout ends everything it started
        os.chdir(work / "cwd")
        env = child_env(work / "cache", work / "ray-guard" if case.ray_guard else None)
        os.environ.clear()
        os.environ.update(env)
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, out_p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, err_p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            new = os.open(path, flags, 0o644)
            os.dup2(new, fd)
            os.close(new)
        sys.argv = [str(REPO / "benchmark" / "cli.py"), *case.argv]
        sys.modules.pop("benchmark.cli", None)  # run as __main__, as -m does (its own module is not imported)
        import runpy

        try:
            runpy.run_module("benchmark.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:  # as the interpreter turns SystemExit into a status
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            code = 130
        except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
            import traceback

            traceback.print_exc()
            code = 1
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed pipe at exit; the interpreter says nothing more either
                pass
    finally:
        os._exit(code)


# ----------------------------------------------------------------------------- faults


@dataclass
class Fault:
    name: str
    survived: bool
    detail: str
    seconds: float = 0.0
    checks: list[str] = field(default_factory=list)


FAULT_SWEEP = {
    "methods": ["zero_shot_clip", "bbt"], "datasets": ["digits_noise", "digits_rotate"], "shots": [2], "seeds": [1, 2],
    "backbones": ["craft-tiny:builtin"], "runs_per_server": 2,
    "hparams": {"bbt": {"*": {"budget": 400, "intrinsic_dim": 16, "popsize": 20}}},
}


class FaultBench:
    """Tiny real sweeps through ``craft bench`` in subprocesses, and their cells read back."""

    def __init__(self, work: Path) -> None:
        self.work = work / "faults"
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = child_env(work / "cache")
        self.n = 0

    def config(self, out: Path, **change: Any) -> Path:
        self.n += 1
        p = self.work / f"sweep{self.n}.yaml"
        p.write_text(yaml.safe_dump({**FAULT_SWEEP, "out": str(out), **change}))
        return p

    def bench(self, config: Path, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "benchmark.cli", "bench", str(config), "--num-cpus", "1",
                               "--no-progress"], capture_output=True, text=True, errors="replace", env=self.env,
                              cwd=self.work, timeout=timeout, stdin=subprocess.DEVNULL)

    def start(self, config: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "benchmark.cli", "bench", str(config), "--num-cpus", "1",
                                 "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env,
                                cwd=self.work, stdin=subprocess.DEVNULL, start_new_session=True)

    @staticmethod
    def files(out: Path) -> list[Path]:
        return sorted(p for p in out.rglob("*.parquet") if not p.name.startswith("."))

    @staticmethod
    def numbers(out: Path) -> dict[str, tuple]:
        """cell_id -> (status, top1_test, queries) of every done cell file."""
        import pyarrow.parquet as pq

        got = {}
        for p in FaultBench.files(out):
            t = pq.read_table(p).to_pylist()
            for row in t:
                got[row["cell_id"]] = (row["status"], row.get("top1_test"), row.get("queries"))
        return got

    def check(self, out: Path, clean: dict[str, tuple], same_numbers: bool = True) -> list[str]:
        """What is wrong with ``out`` against the clean run: a cell missing, doubled, failed or with other numbers."""
        from benchmark.results.store import stray_temporaries

        problems = []
        files = self.files(out)
        ids = Counter(p.name.split(".")[0] for p in files)
        doubled = [c for c, n in ids.items() if n > 1]
        if doubled:
            problems.append(f"cells with more than one file: {doubled}")
        got = self.numbers(out)
        missing = sorted(set(clean) - set(got))
        if missing:
            problems.append(f"{len(missing)} cell(s) missing")
        failed = [c for c, v in got.items() if v[0] != "ok"]
        if failed:
            problems.append(f"{len(failed)} cell(s) failed")
        if same_numbers:
            differ = [c for c in clean if c in got and got[c] != clean[c]]
            if differ:
                problems.append(f"{len(differ)} cell(s) with numbers unlike the clean run's: "
                                f"{[(clean[c], got[c]) for c in differ[:2]]}")
        strays = stray_temporaries(str(out))
        if strays:
            problems.append(f"temporary files left: {strays}")
        return problems


def run_faults(work: Path, budget_s: float = 600.0) -> list[Fault]:
    """Faults on real tiny sweeps; each rerun must leave every cell once, with the clean run's numbers."""
    fb = FaultBench(work)
    faults: list[Fault] = []
    start = time.perf_counter()
    clean_out = fb.work / "clean"
    t0 = time.perf_counter()
    proc = fb.bench(fb.config(clean_out))
    if proc.returncode != 0:
        return [Fault("clean run", False, f"exit {proc.returncode}: {proc.stderr[-500:]}")]
    clean = fb.numbers(clean_out)
    print(f"faults: clean run, {len(clean)} cells in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    def record(name: str, t: float, problems: list[str], detail: str = "") -> None:
        f = Fault(name, not problems, "; ".join(problems) or detail or "every cell once, the clean numbers",
                  round(time.perf_counter() - t, 1))
        faults.append(f)
        print(f"faults: {name}: {'survived' if f.survived else 'NOT SURVIVED'} ({f.detail}) {f.seconds:.0f} s",
              file=sys.stderr, flush=True)

    def copy_clean(name: str) -> Path:
        out = fb.work / name
        shutil.copytree(clean_out, out)
        return out

    # 1-4: damaged and stray result files, all in one results folder, one rerun
    t = time.perf_counter()
    out = copy_clean("damaged")
    files = fb.files(out)
    damage: dict[str, Callable[[Path], None]] = {
        "corrupted result file (bytes flipped)": lambda p: p.write_bytes(
            p.read_bytes()[:100] + bytes(b ^ 0xFF for b in p.read_bytes()[100:300]) + p.read_bytes()[300:]),
        "truncated result file": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
        "zero-byte result file": lambda p: p.write_bytes(b""),
    }
    for (name, hurt), p in zip(damage.items(), files):
        hurt(p)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    import socket

    stray = files[-1].parent / f".tmp-{dead}@{socket.gethostname()}@x.parquet"
    stray.write_bytes(b"half a file")
    proc = fb.bench(fb.config(out))
    problems = fb.check(out, clean) + ([f"rerun exit {proc.returncode}: {proc.stderr[-300:]}"] if proc.returncode else [])
    if "Traceback" in proc.stderr:
        problems.append("traceback on stderr")
    kept = list(out.rglob(".*damaged-*"))
    for i, name in enumerate(damage):
        own = [x for x in problems]
        if not any(k.name.startswith(f".{files[i].name}") for k in kept):
            own.append(f"damaged file {files[i].name} not kept aside")
        record(name, t, own)
    record("stray temporary of a dead writer", t, problems + (["stray temporary still there"] if stray.exists() else []))

    # 5-7: signals to the driver mid-sweep, then a rerun
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if time.perf_counter() - start > budget_s:
            faults.append(Fault(f"{sig.name} of the driver mid-sweep", False, "not run: out of time"))
            continue
        t = time.perf_counter()
        out = fb.work / f"sig-{sig.name}"
        config = fb.config(out)
        p = fb.start(config)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and p.poll() is None and not fb.files(out):
            time.sleep(0.2)
        first = len(fb.files(out))
        if p.poll() is None:
            if sig == signal.SIGINT:  # Ctrl-C: the terminal signals the whole foreground group
                os.killpg(p.pid, sig)
            else:  # kill PID: the driver alone
                p.send_signal(sig)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        err = err.decode(errors="replace")
        problems = ["traceback when interrupted"] if "Traceback" in err else []
        how = f"exit {p.returncode}" + (" (SIGABRT)" if p.returncode in (-6, 134) else "")
        if "received at time=" in err or "PC: @" in err:
            how += ", Ray's native signal handler printed a stack dump"
        proc = fb.bench(config)
        if proc.returncode:
            problems.append(f"rerun exit {proc.returncode}: {proc.stderr[-300:]}")
        problems += fb.check(out, clean)
        record(f"{sig.name} of the driver mid-sweep", t, problems,
               f"signalled after {first} of {len(clean)} cells ({how}); rerun completed, clean numbers")

    # 8: a read-only results folder: refused in one sentence, nothing lost; writable again, the rerun completes
    if time.perf_counter() - start <= budget_s:
        t = time.perf_counter()
        out = copy_clean("readonly")
        victim = fb.files(out)[0]
        victim.unlink()  # one cell left to run
        before = {p: p.read_bytes() for p in fb.files(out)}
        undo = make_read_only(out)
        config = fb.config(out)
        if undo is None:
            faults.append(Fault("read-only results folder", False, "not run: cannot make a folder read-only here"))
        else:
            try:
                proc = fb.bench(config)
            finally:
                undo()
            lines = proc.stderr.strip().splitlines()
            problems = []
            if proc.returncode != 2 or len(lines) != 1 or not lines[0].startswith("craft bench: error:"):
                problems.append(f"read-only: exit {proc.returncode}, stderr {lines[-3:]}")
            if any(p.read_bytes() != b for p, b in before.items()):
                problems.append("a result file changed")
            proc = fb.bench(config)
            if proc.returncode:
                problems.append(f"rerun exit {proc.returncode}")
            problems += fb.check(out, clean)
            record("read-only results folder", t, problems, f"refused: {lines[-1][:300] if lines else ''}; rerun completed")

    # 9: a dataset image deleted after a cached run: the done cells stay; a new sweep on it names the file
    if time.perf_counter() - start <= budget_s:
        t = time.perf_counter()
        folder = work / "cache" / "builtin" / "digits-noise"
        split = json.loads(next(folder.glob("split_*.json")).read_text())
        victim = folder / "images" / split["test"][0][0]
        saved = victim.read_bytes()
        victim.unlink()
        try:
            out = copy_clean("deleted-image")
            config = fb.config(out)
            proc = fb.bench(config)
            problems = [] if proc.returncode == 0 and "nothing to run" in proc.stdout else [
                f"rerun of the done sweep: exit {proc.returncode}: {proc.stderr[-200:]}"]
            problems += fb.check(out, clean)
            fresh = fb.work / "deleted-image-fresh"
            proc = fb.bench(fb.config(fresh, datasets=["digits_noise"], methods=["zero_shot_clip"], seeds=[1]))
            said = proc.stderr + proc.stdout + "".join(p.read_text(errors="replace") for p in fresh.rglob("*.log"))
            if "Traceback" in proc.stderr:
                problems.append("traceback on the driver's stderr")
            if proc.returncode == 0:
                problems.append("a sweep on the damaged dataset reported ok")
            elif victim.name not in said:
                problems.append(f"the missing image {victim.name} is not named (exit {proc.returncode}: {proc.stderr[-200:]})")
            how = "one sentence" if proc.returncode == 2 else f"exit {proc.returncode}, failed cell naming it"
            record("dataset image deleted after a cached run", t, problems,
                   f"done cells kept; a new sweep names {victim.name} ({how})")
        finally:
            victim.write_bytes(saved)
    return faults


def make_read_only(folder: Path) -> Callable[[], None] | None:
    """Make ``folder`` read-only for this user (a read-only bind mount for root); the undo, or None if impossible."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(modes[p] & ~0o222)

        def undo() -> None:
            for p, m in modes.items():
                p.chmod(m)

        return undo
    ok = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
    if ok and subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["umount", str(folder)], check=False)
    if ok:
        subprocess.run(["umount", str(folder)], check=False)
    return None


# ----------------------------------------------------------------------------- report


def summarise(results: list[Result]) -> tuple[str, dict[str, int]]:
    by_group: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_group[r.group][r.outcome] += 1
    cols = OUTCOMES
    rows = [["category", "inputs", *cols]]
    for g, c in by_group.items():
        rows.append([g, str(sum(c.values())), *(str(c[k]) for k in cols)])
    total = Counter(r.outcome for r in results)
    rows.append(["total", str(len(results)), *(str(total[k]) for k in cols)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)
    tolerated = [r for r in results if r.expect == TOLERATED]
    totals = {
        "inputs": len(results),
        "one_sentence": total[ONE],
        "reported": total[REPORTED],
        "tracebacks": total[TRACEBACK],
        "accepted": total[ACCEPTED],
        "tolerated_as_designed": sum(r.ok for r in tolerated),
        "silent_wrong": sum(1 for r in results if r.outcome == ACCEPTED and not r.ok),
        "other": total[OTHER],
        "as_expected": sum(r.ok for r in results),
    }
    return text, totals


def write_outputs(out: Path, results: list[Result], totals: dict[str, Any], faults: list[Fault] | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").write_text(json.dumps({"totals": totals, "cases": [asdict(r) for r in results]}, indent=1))
    with open(out / "cases.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "name", "outcome", "ok", "expect", "rc", "seconds", "line", "argv"])
        for r in results:
            w.writerow([r.group, r.name, r.outcome, r.ok, r.expect, r.rc, r.seconds, r.line, " ".join(r.argv)])
    if faults is not None:
        (out / "faults.json").write_text(json.dumps([asdict(f) for f in faults], indent=1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m measurement.bad_inputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bad_inputs", help="folder for cases.json/.csv")
    parser.add_argument("--faults", action="store_true", help="also run faults on real tiny sweeps (minutes)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--fresh", action="store_true",
                        help="each case in a fresh interpreter (sys.executable -m benchmark.cli; about 4 s each) instead "
                             "of a child forked from this process with the CLI's modules imported (the same code, fast)")
    parser.add_argument("--only", metavar="TEXT", help="only cases whose category or name contains TEXT")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="only N cases, spread over the catalogue's one-sentence cases (a quick check of this script)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args(argv)
    wall = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="craft-bad-inputs-"))
    try:
        controls, cases = build_catalogue(work)
        if args.only:
            cases = [c for c in cases if args.only in c.group or args.only in c.name]
        if args.sample:
            cases = sample([c for c in cases if c.expect == ONE], args.sample)
        print(f"{len(cases)} bad inputs in {work}; controls first", file=sys.stderr, flush=True)
        checked = run_cases(controls, work, 1, progress=False, fresh=args.fresh)
        broken = [c for c in checked if not c.ok]
        for c in broken:
            print(f"control failed: {c.name}: {c.outcome}: {c.line}", file=sys.stderr)
        if broken:
            return 1
        results = run_cases(cases, work, args.jobs, fresh=args.fresh)
        catalogue_s = time.perf_counter() - wall
        text, totals = summarise(results)
        print(text)
        odd = [r for r in results if not r.ok]
        if odd:
            print("\nnot as expected:")
            for r in odd:
                print(f"  {r.outcome:10s} {r.group}: {r.name}: {r.line}")
        faults = None
        if args.faults:
            t = time.perf_counter()
            faults = run_faults(work)
            print("\nfaults:")
            for f in faults:
                print(f"  {'survived' if f.survived else 'NOT SURVIVED':13s} {f.name}: {f.detail}")
            totals["faults_tried"] = len(faults)
            totals["faults_survived"] = sum(f.survived for f in faults)
            totals["faults_s"] = round(time.perf_counter() - t, 1)
        totals["catalogue_s"] = round(catalogue_s, 1)
        totals["wall_s"] = round(time.perf_counter() - wall, 1)
        print("\ntotals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
        write_outputs(args.out, results, totals, faults)
        print(f"every case: {args.out / 'cases.csv'} and cases.json")
        return 0 if not odd and all(f.survived for f in faults or []) else 1
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
