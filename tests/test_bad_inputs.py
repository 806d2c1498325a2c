"""Every bad input of issue 23, point 7, gets one sentence and exit status 2, never a traceback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from benchmark.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SWEEP = {"methods": ["zero_shot_clip"], "datasets": ["digits_noise"], "shots": [2], "seeds": [1],
         "backbones": ["craft-tiny:builtin"]}


def one_sentence(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``craft argv``; assert exit 2 and one line on stderr, no traceback; return that line."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"craft {argv[0]}: error: ")
    return err.strip()


def write(path: Path, data: dict, **extra: object) -> Path:
    path.write_text(yaml.safe_dump({**data, **extra}))
    return path


def test_a_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = tmp_path / "bench.yaml"
    bench.write_bytes(b"out: r\nmethods: [bbt]  # caf\xe9 in Latin-1\n")
    assert one_sentence(capsys, ["bench", str(bench)]).endswith(
        f"{bench} is not UTF-8 text (byte 28: b'\\xe9'); save it as UTF-8")
    assert "is not UTF-8 text" in one_sentence(capsys, ["tune", str(bench)])


def test_a_1500_deep_include_chain(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for i in range(1500):
        (tmp_path / f"c{i}.yaml").write_text(f"include: [c{i + 1}.yaml]\n" if i < 1499 else "seeds: [1]\n")
    line = one_sentence(capsys, ["bench", str(tmp_path / "c0.yaml")])
    assert "includes nest more than 32 files deep" in line and "merge some of them" in line


def test_a_yaml_alias_bomb_makes_a_short_message_quickly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi")]
    text = "\n".join(bomb).replace("a: &a", "x0: &a", 1) + "\n"
    config = tmp_path / "bomb.yaml"
    config.write_text(text.replace("i: &i", "seeds: &i"))
    assert len(config.read_bytes()) < 600  # 9**9 = 387 million items once expanded
    start = time.perf_counter()
    code = main(["bench", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and len(err) < 2100 and "Traceback" not in err
    assert time.perf_counter() - start < 10


def test_alias_bomb_values_are_shown_cut(tmp_path: Path) -> None:
    from benchmark.sweep.config import config_from_dict

    x = ["x"] * 9
    for _ in range(8):
        x = [x] * 9
    with pytest.raises(UserError) as err:
        config_from_dict({**SWEEP, "out": "r", "seeds": x})
    assert len(str(err.value)) < 400 and "seeds must be a non-empty list of integers, got [[[[...]" in str(err.value)


def test_a_key_given_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "twice.yaml"
    config.write_text("out: r\nseeds: [1]\nmethods: [bbt]\nseeds: [2]\n")
    line = one_sentence(capsys, ["bench", str(config)])
    assert f"{config} is not valid YAML: while reading a mapping" in line and "key 'seeds' appears twice" in line
    assert "appears twice" in one_sentence(capsys, ["tune", str(config)])


def test_out_with_a_tilde_is_expanded(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path / "tilde.yaml", SWEEP, out="~/results/x")
    assert main(["bench", str(config), "--dry-run"]) == 0
    assert f"-> {tmp_path / 'home' / 'results' / 'x'}" in capsys.readouterr().out
    from tuning.config import parse_config

    (tmp_path / "home" / "t").mkdir(parents=True)
    cfg = parse_config({"methods": ["bbt"], "datasets": ["digits_noise"], "backbones": {"craft-tiny": "builtin"},
                        "out": "~/t", "storage": "~/t/j.journal"}, "t.yaml", check_data=False)
    assert (cfg.out, cfg.storage) == (str(tmp_path / "home" / "t"), str(tmp_path / "home" / "t" / "j.journal"))
    assert not (tmp_path / "~").exists()


def test_table_out_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    line = one_sentence(capsys, ["table", "--published", "--out", str(tmp_path)])
    assert line == f"craft table: error: --out {tmp_path} is a folder; give a file path, e.g. {tmp_path / 'table.md'}"


def test_a_test_only_dataset_under_datasets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = write(tmp_path / "v2.yaml", SWEEP, out="r", datasets=["imagenet_v2"])
    assert one_sentence(capsys, ["bench", str(config)]).endswith(
        "datasets[0]: imagenet_v2 is a test set only (no training images); train on imagenet and score it with "
        "eval_datasets: {imagenet: [imagenet_v2]}")


def test_a_bad_line_in_the_middle_of_an_optuna_journal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import optuna

    from tuning.storage import open_storage

    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(str(journal)))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    lines = journal.read_text().splitlines(keepends=True)
    lines[4] = '{"op_code": 5, "worker_id": garbage\n'
    journal.write_text("".join(lines))
    with pytest.raises(UserError, match=rf"^Optuna journal {journal}: line 5 is not a JSON record "):
        open_storage(str(journal), repair=False)
    config = write(tmp_path / "tune.yaml", {"methods": ["bbt"], "datasets": ["digits_noise"],
                                            "backbones": ["craft-tiny:builtin"], "out": str(tmp_path), "storage": str(journal)})
    os.environ.setdefault("CRAFT_BENCH_CACHE", str(tmp_path / "cache"))
    line = one_sentence(capsys, ["tune", str(config), "--dry-run"])
    assert f"Optuna journal {journal}: line 5 is not a JSON record" in line


@pytest.fixture
def tiny_disk(tmp_path: Path):  # noqa: ANN201
    """A 64 kB tmpfs (needs root); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_while_writing_results_and_tables(tiny_disk: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmark.results.store import scan_cells, stray_temporaries, write_cell
    from benchmark.sweep.config import config_from_dict
    from benchmark.sweep.plan import expand
    from tests.test_sweep_results import ok_row

    (tiny_disk / "filler").write_bytes(b"\0" * (60 * 1024))
    cells = expand(config_from_dict({**SWEEP, "out": "r", "seeds": list(range(1, 40))}))
    out = str(tiny_disk / "out")
    written = 0
    with pytest.raises(UserError, match=r"^no space left on the device to write .*: free space and run the same command again$"):
        for cell in cells:
            write_cell(out, [ok_row(cell)])
            written += 1
    status, damaged = scan_cells(out)
    assert len(status) == written and damaged == {} and stray_temporaries(out) == []
    (tiny_disk / "filler").unlink()
    (tiny_disk / "filler2").write_bytes(b"\0" * (63 * 1024))
    line = one_sentence(capsys, ["table", "--published", "--out", str(tiny_disk / "table.md")])
    assert line == f"craft table: error: cannot write --out {tiny_disk / 'table.md'}: No space left on device"
    assert not (tiny_disk / "table.md").exists()


def _builtin_cache(tmp_path: Path) -> Path:
    from benchmark.datasets.builtin import ensure_builtin_suite

    ensure_builtin_suite(tmp_path / "cache" / "builtin")
    return tmp_path / "cache"


def test_a_dry_run_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    cache = _builtin_cache(tmp_path)
    config = write(tmp_path / "s.yaml", SWEEP, out=str(tmp_path / "r"), seeds=list(range(1, 200)))
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.cli", "bench", str(config), "--dry-run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(REPO), "CRAFT_BENCH_CACHE": str(cache)})
    proc.stdout.close()  # as `| head -0` would: the reader is gone before the plan is printed
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ""
    shell = subprocess.run(f"{sys.executable} -m benchmark.cli bench {config} --dry-run | head -2", shell=True,
                           capture_output=True, text=True, cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(REPO), "CRAFT_BENCH_CACHE": str(cache)})
    assert shell.stdout.count("\n") == 2 and shell.stderr == ""


def test_ray_failing_to_start(tmp_path: Path) -> None:
    cache = _builtin_cache(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = write(tmp_path / "s.yaml", SWEEP, out=str(tmp_path / "r"))
    run = subprocess.run([sys.executable, "-m", "benchmark.cli", "bench", str(config), "--num-cpus", "1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(REPO), "CRAFT_BENCH_CACHE": str(cache),
                              "RAY_TMPDIR": str(blocker)})
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("craft bench: error:")]
    assert len(errors) == 1 and "Traceback" not in run.stderr
    assert errors[0].startswith("craft bench: error: could not start a local Ray runtime: NotADirectoryError: ")
    assert not (tmp_path / "r").exists()  # nothing written


def test_shots_above_the_images_of_a_class_are_said_once(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRAFT_BENCH_CACHE", str(_builtin_cache(tmp_path)))
    config = write(tmp_path / "s.yaml", SWEEP, out=str(tmp_path / "r"), shots=[2, 5000, 9000], seeds=[1, 2, 3])
    assert main(["bench", str(config), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert err.count("note: ") == 1 and err.startswith("note: digits_noise: 10 of 10 classes have fewer training images than 9000")
    assert "its 5000, 9000-shot cells use every image of such classes" in err


def test_a_row_records_the_shots_a_cell_really_had() -> None:
    """Classes with fewer training images than asked: the row's shots_used is the fewest any class had."""
    import torch

    from benchmark.sweep.run_cell import shots_used

    assert shots_used(torch.tensor([0] * 16 + [1] * 16 + [2] * 16)) == 16
    assert shots_used(torch.tensor([0] * 16 + [1] * 7 + [3] * 16)) == 7  # class 1 has 7; class 2 none in the set
    assert shots_used(torch.tensor([], dtype=torch.long)) == 0


# ----------------------------------------------------------------------------- found by measurement/bad_inputs.py


def argparse_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """``craft argv`` refused by argparse: exit 2 and one line (no usage block), no traceback."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err and "usage:" not in err, err
    return err.strip()


def test_a_flag_argparse_refuses_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert argparse_line(capsys, ["bench", "cfg.yaml", "--num-cpus", "x"]) == (
        "craft bench: error: argument --num-cpus: invalid int value: 'x' (see craft bench --help)")
    assert argparse_line(capsys, ["cache", "clear", "--older-than", "soon"]).startswith(
        "craft cache clear: error: argument --older-than: expected a number of days of 0 or more, got 'soon'")
    assert argparse_line(capsys, ["results"]).startswith("craft results: error: the following arguments are required")
    assert argparse_line(capsys, ["nope"]).startswith("craft: error: argument COMMAND: invalid choice: 'nope'")


def test_yaml_nested_too_deep_is_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    deep = tmp_path / "deep.yaml"
    deep.write_text("out: r\nseeds: " + "[" * 10000 + "]" * 10000 + "\n")
    for command in ("bench", "tune"):
        assert one_sentence(capsys, [command, str(deep)]).endswith(
            f"{deep} nests its lists or mappings too deep for the YAML reader (hundreds of levels; a config needs a few)")


TUNE = {"methods": ["bbt"], "datasets": ["digits_noise"], "backbones": ["craft-tiny:builtin"]}


@pytest.mark.parametrize("change, words", [
    ({7: 1}, "unknown key(s) 7; allowed: name, methods"),  # a number as a key: was a TypeError
    ({"space": ""}, "space must map method -> parameter -> spec, got ''"),  # was the default space, silently
    ({"space": []}, "space must map method -> parameter -> spec, got []"),
    ({"pool": {}}, "pool must be a list of dataset, shots, backbone, got {}"),  # was no pooling, silently
])
def test_tune_keys_of_the_wrong_type_are_refused(tmp_path: Path, change: dict, words: str) -> None:
    from tuning.config import parse_config

    with pytest.raises(UserError, match=r"^t\.yaml: ") as err:
        parse_config({**TUNE, "out": str(tmp_path), **change}, "t.yaml", check_data=False)
    assert words in str(err.value)


def test_num_cpus_below_one_is_refused_by_demo_and_tune_before_ray(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import ray

    assert one_sentence(capsys, ["demo", "--out", str(tmp_path / "r"), "--num-cpus", "0"]) == (
        "craft demo: error: --num-cpus must be >= 1, got 0")
    assert one_sentence(capsys, ["tune", str(tmp_path / "t.yaml"), "--num-cpus", "-1"]) == (
        "craft tune: error: --num-cpus must be >= 1, got -1")
    assert not ray.is_initialized() and not (tmp_path / "r").exists()


def test_a_results_location_that_cannot_be_listed(tmp_path: Path) -> None:
    """``craft bench --dry-run`` with a 5000-character out: was pyarrow's OSError, with a traceback."""
    from benchmark.results.store import scan_cells

    with pytest.raises(UserError, match=r"^cannot read results location .*y: File name too long$"):
        scan_cells(str(tmp_path / ("y" * 5000)))


def test_table_and_plot_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert one_sentence(capsys, ["table", "--published", "--out", str(afile / "t.md")]) == (
        f"craft table: error: --out {afile / 't.md'} lies under {afile}, a file; give a file path in a folder")  # was NotADirectoryError
    journal = str(tmp_path / "j.journal")
    assert one_sentence(capsys, ["plot", "--kind", "optuna", "--storage", journal, "--out", str(afile)]) == (
        f"craft plot: error: --out {afile} is a file; give a folder for the figure files")  # was FileExistsError
    assert one_sentence(capsys, ["plot", "--kind", "optuna", "--storage", journal, "--out", str(afile / "p")]) == (
        f"craft plot: error: --out {afile / 'p'} lies under {afile}, a file; give a folder for the figure files")


def test_plot_of_a_damaged_optuna_journal(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    journal = tmp_path / "j.journal"
    journal.write_text('{"op_code": 0, "worker_id": garbage\nnot json either\n')  # Optuna skips a bad last line only
    line = one_sentence(capsys, ["plot", "--kind", "optuna", "--storage", str(journal), "--out", str(tmp_path / "p")])
    assert line.startswith(f"craft plot: error: Optuna journal {journal} cannot be read: JSONDecodeError: ")


@pytest.mark.parametrize("method, values", [
    ("bbt", {"sigma": float("inf")}), ("bbt", {"std": float("inf")}), ("bbt", {"ctx_init": " "}),
    ("craft", {"lr": float("inf")}), ("craft", {"weight": float("nan")}), ("craft", {"weight": -1.0}),
    ("craft", {"lambda_i": -1.0}), ("craft", {"lambda_o": float("nan")}),
    ("cbbt", {"lr": float("inf")}), ("cbbt", {"mu": float("inf")}), ("coop", {"lr": float("inf")}),
])
def test_hyperparameters_that_would_train_on_nonsense_are_refused(method: str, values: dict) -> None:
    """Each was accepted: an infinite step size or learning rate, a negative or NaN loss weight, no prompt tokens."""
    from benchmark.sweep.config import config_from_dict

    name = next(iter(values))
    methods = ["zero_shot_clip", method]
    with pytest.raises(UserError, match=rf"hparams\.{method}\.\*: invalid hyperparameter value\(s\): {name}="):
        config_from_dict({**SWEEP, "out": "r", "methods": methods, "hparams": {method: {"*": values}}})


@pytest.mark.parametrize("change, words", [
    ({"runs_per_server": 2**31}, "runs_per_server must be an integer >= 1 and < 1,073,741,824"),  # Ray's int32
    ({"compile": ""}, "compile must be true, false or a torch.compile mode"),  # was false, silently
])
def test_server_options_out_of_range(change: dict, words: str) -> None:
    from benchmark.sweep.config import config_from_dict

    with pytest.raises(UserError, match=re.escape(words)):
        config_from_dict({**SWEEP, "out": "r", **change})


def test_datasets_check_with_an_empty_root(capsys: pytest.CaptureFixture) -> None:
    assert one_sentence(capsys, ["datasets", "check", "--root", ""]) == (
        "craft datasets: error: --root is empty (''); give the folder that holds the dataset folders")


def test_results_that_are_all_damaged_are_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Was a warning per damaged file, then the error: two lines and more."""
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(b"PAR1 not really parquet")
    for argv in (["table", str(tmp_path)], ["plot", str(tmp_path), "--kind", "shots", "--out", str(tmp_path / "p")]):
        line = one_sentence(capsys, argv)
        assert f"no readable Parquet files under {tmp_path}: all 2 are damaged, e.g. {tmp_path / 'a.parquet'}: " in line
        assert line.endswith(f"; craft results {tmp_path} names the other 1")


def test_a_pretrained_tag_open_clip_does_not_know_is_refused_before_anything_runs(tmp_path: Path,
                                                                                  capsys: pytest.CaptureFixture) -> None:
    """Found by ``python -m measurement.bad_inputs``: the dry run passed it and every cell failed later."""
    config = write(tmp_path / "tag.yaml", SWEEP, out=str(tmp_path / "r"), backbones=["RN50:no-such-tag"])
    line = one_sentence(capsys, ["bench", str(config), "--dry-run"])
    assert line.endswith("backbones: RN50 has no pretrained tag 'no-such-tag'; its tags: openai, yfcc15m, cc12m "
                         "(or give a checkpoint path, or random)")
    assert not (tmp_path / "r").exists()


def test_sigterm_stops_a_command_as_ctrl_c_does_with_exit_143(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture) -> None:
    """The handler a driver installs after Ray starts turns SIGTERM into a KeyboardInterrupt (clean-up
    runs, as for Ctrl-C), remembered even where Ray's waits re-raise it plain; ``python -m
    measurement.bad_inputs --faults`` sends a real one to a sweep."""
    import signal
    import types

    import benchmark.errors as errors
    from benchmark.cli import run_command

    def run(args):  # noqa: ANN001, ANN202 - a subcommand module's run
        try:
            errors.raise_terminated(signal.SIGTERM, None)
        except KeyboardInterrupt:
            raise KeyboardInterrupt from None  # as Ray's waits do

    module = types.ModuleType("fake_command")
    module.add_arguments, module.run = (lambda parser: None), run
    monkeypatch.setitem(sys.modules, "fake_command", module)
    monkeypatch.setattr(errors, "_terminated", False)
    assert run_command("bench", "fake_command", "", []) == 143
    assert capsys.readouterr().err == "terminated\n"
    monkeypatch.setattr(errors, "_terminated", False)
    module.run = lambda args: (_ for _ in ()).throw(KeyboardInterrupt())
    assert run_command("bench", "fake_command", "", []) == 130
