"""``craft perf``: its pieces (prompt padding, generation timing, sweep model) and one small end-to-end run."""

from __future__ import annotations

import gzip
import json
import math

import pytest
import torch

from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.model.loading import load_model
from benchmark.model.engine import uses_cuda_graphs
from measurement.perf import (
    _compile_seconds, _parse_compile_modes, _parse_runs, _ratios, _sweep_path, _targets, _user_devices, compiled_path_name,
)
from measurement.loops import (
    SEEDS, _generations, amortised, dataset_shapes, device_name, padded_classnames, sweep_datasets, sweep_row,
    sweep_rows_scaled, sweep_summary, warmup_for,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return load_model("craft-tiny", "random").tokenizer


@pytest.mark.parametrize("target, expected", [(12, 12), (16, 16), (40, 16)])
def test_padded_classnames_give_prompts_of_the_asked_length_capped_at_the_context(tokenizer, target, expected):
    names = padded_classnames(tokenizer, 120, target, n_ctx=4, context_length=16)
    assert len(set(names)) == 120
    name_tokens = (tokenizer([f"{n}." for n in names]) != 0).sum(1) - 2
    assert set((1 + 4 + name_tokens + 1).tolist()) == {expected}


def test_padded_classnames_zero_keeps_the_paper_shapes_names(tokenizer):
    assert padded_classnames(tokenizer, 3, 0, 4, 77) == ["class 0", "class 1", "class 2"]


def test_generation_times_run_from_one_budgeted_call_to_the_next():
    # (start, end, budgeted, sequences): generation g = budgeted call, then refinement call.
    calls = []
    for g in range(4):
        t = 10.0 * g
        calls += [(t, t + 2.0, True, 400), (t + 3.0, t + 3.5, False, 10)]
    rows = _generations(calls, first=1, count=2)
    assert [r["seconds"] for r in rows] == [10.0, 10.0]
    assert [r["query_seconds"] for r in rows] == [2.5, 2.5]
    assert [r["sequences"] for r in rows] == [410, 410]
    assert rows[0]["start"] == 10.0 and rows[1]["end"] == 30.0


def test_sweep_covers_the_eleven_coop11_datasets_with_their_budgets():
    shapes = {d.key: d for d in sweep_datasets()}
    assert len(shapes) == 11 and shapes["paper-shapes/imagenet"].classes == 1000
    assert shapes["paper-shapes/caltech101"].train == 16 * 100
    rows = [sweep_row(d, 40, gen_s=0.1, query_s=0.04, eval_s=0.1) for d in shapes.values()]
    gens = {r["dataset"]: r["generations"] for r in rows}
    assert gens["paper-shapes/imagenet"] == 100 and gens["paper-shapes/eurosat"] == 200  # 4000/40, 8000/40
    row = next(r for r in rows if r["dataset"] == "paper-shapes/eurosat")
    assert row["run_seconds"] == pytest.approx(200 * 0.1 + 20 * 0.1)  # an evaluation every 10 generations
    summary = sweep_summary(rows, "measure", concurrency_speedup=2.0)
    assert summary["serial_s"] == pytest.approx(SEEDS * (10 * 22.0 + 11.0))
    assert summary["query_bound_s"] == pytest.approx(SEEDS * (10 * 10.0 + 5.0))
    assert summary["concurrent_s"] == pytest.approx(summary["serial_s"] / 2)  # above the query bound here
    assert sweep_summary(rows, "measure", concurrency_speedup=8.0)["concurrent_s"] == summary["query_bound_s"]
    assert "3 seeds" in summary["model"]
    # Text sequences of the sweep's generations: 41 prompts (40 candidates and the refinement
    # query) per class, 200 generations (ImageNet 100), 3 seeds.
    classes = sum(d.classes for d in shapes.values() if d.key != "paper-shapes/imagenet")
    assert summary["sequences"] == SEEDS * 41 * (200 * classes + 100 * 1000) == 41_598_600


def test_scaled_rows_grow_the_runs_own_work_with_the_logits_on_a_cpu_and_with_the_classes_on_a_gpu():
    base = dataset_shapes("caltech101")
    loop = {"query_seconds_per_generation": 0.02, "runner_seconds_per_generation": 0.03}
    cma = 0.01
    for user, growth in (("cpu", 10 * 10), ("cuda:0", 10)):  # ImageNet: 10x the classes, 10x the images
        rows = {r["dataset"]: r for r in sweep_rows_scaled(base, loop, 0.0, cma, 40, user)}
        imagenet = rows["paper-shapes/imagenet"]
        assert imagenet["query_seconds_per_generation"] == pytest.approx(0.2)
        assert imagenet["seconds_per_generation"] == pytest.approx(0.2 + cma + 0.02 * growth)
        assert rows["paper-shapes/caltech101"]["seconds_per_generation"] == pytest.approx(0.05)


def test_dataset_shapes_accept_bare_keys_and_refuse_test_only_sets():
    assert dataset_shapes("eurosat") == dataset_shapes("paper-shapes/eurosat")
    assert dataset_shapes("eurosat").test == 8100
    with pytest.raises(UserError, match="test-only"):
        dataset_shapes("imagenet_v2")
    with pytest.raises(UserError, match="--runs"):
        _parse_runs("1,x")
    assert _parse_runs("4,1,4") == [1, 4]


def test_ratios_compare_loops_at_the_same_concurrency_or_with_one_official_run():
    paths = {
        "official": {"raw": {"sequences_per_s": 10.0, "sequences_per_cpu_s": 5.0},
                     "loop": [{"runs": 1, "sequences_per_s": 4.0}, {"runs": 2, "sequences_per_s": 5.0}]},
        "fast": {"raw": {"sequences_per_s": 50.0, "sequences_per_cpu_s": 20.0},
                 "loop": [{"runs": 1, "sequences_per_s": 12.0}, {"runs": 2, "sequences_per_s": 20.0},
                          {"runs": 4, "sequences_per_s": 40.0}, {"runs": 4, "cma_workers": True, "sequences_per_s": 48.0}]},
    }
    # 4 official runs were not measured (skipped: too slow): the official code runs one at a time.
    assert _ratios(paths) == {"raw_fast/official": 5.0, "raw_cpu_time_fast/official": 4.0,
                              "loop_runs1_fast/official": 3.0, "loop_runs2_fast/official": 4.0,
                              "loop_runs4_fast/official": 10.0, "loop_runs4_cma-workers_fast/official": 12.0}


def test_ratios_pair_loops_whose_runs_computed_in_the_same_place():
    paths = {
        "official": {"raw": {"sequences_per_s": 10.0, "sequences_per_cpu_s": 10.0},
                     "loop": [{"runs": 1, "user_device": "cuda", "sequences_per_s": 5.0},
                              {"runs": 1, "user_device": "cpu", "sequences_per_s": 4.0}]},
        "fast": {"raw": {"sequences_per_s": 50.0, "sequences_per_cpu_s": 50.0},
                 "loop": [{"runs": 1, "user_device": "cuda", "sequences_per_s": 40.0},
                          {"runs": 1, "user_device": "cpu", "sequences_per_s": 8.0}]},
    }
    r = _ratios(paths)
    assert r["loop_runs1_user-cuda_fast/official"] == 8.0 and r["loop_runs1_fast/official"] == 2.0


def test_user_devices_and_the_path_the_sweep_estimate_runs():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert _user_devices("both", gpu) == [gpu, cpu] and _user_devices("both", cpu) == [cpu]
    assert _user_devices("engine", gpu) == [gpu] and _user_devices("cpu", gpu) == [cpu]
    # The compiled path where it was measured (one graph for every dataset; a sweep's compile key).
    paths = {"fast": {"raw": {"sequences_per_s": 1.0}}, "fast_compiled": {"compile": "default", "raw": {"sequences_per_s": 2.0}}}
    assert _sweep_path(paths) == "fast_compiled"
    assert _sweep_path({"fast": {"raw": {}}, "fast_compiled": {"compile": "default", "error": "x"}}) == "fast"
    assert _sweep_path({"official": {"raw": {}}}) is None
    # Of several compiled paths, the fastest in the loop (not in raw throughput), else in raw throughput.
    loop = lambda seq: [{"runs": 4, "sequences_per_s": seq}]  # noqa: E731
    two = {"fast_compiled": {"compile": "default", "raw": {"sequences_per_s": 3.0}, "loop": loop(1.0)},
           "fast_compiled_reduce_overhead": {"compile": "reduce-overhead", "raw": {"sequences_per_s": 2.0}, "loop": loop(2.0)}}
    assert _sweep_path(two) == "fast_compiled_reduce_overhead"
    # A path whose loops failed is not chosen for its raw throughput.
    two["fast_compiled"]["raw"]["sequences_per_s"] = 9.0
    two["fast_compiled_reduce_overhead"]["loop"] = [{"runs": 4, "error": "RuntimeError: x"}]
    assert _sweep_path(two) == "fast_compiled"
    two["fast_compiled"]["raw"]["sequences_per_s"] = 3.0
    for entry in two.values():
        del entry["loop"]
    assert _sweep_path(two) == "fast_compiled"


def test_compile_modes_are_checked_before_any_work_and_name_their_paths():
    assert _parse_compile_modes(None, True) == ["default"]
    assert _parse_compile_modes("default, reduce-overhead,default", True) == ["default", "reduce-overhead"]
    assert [compiled_path_name(m) for m in ("default", "reduce-overhead")] == ["fast_compiled", "fast_compiled_reduce_overhead"]
    with pytest.raises(UserError, match="--compile-mode: Unrecognized mode=fastest"):
        _parse_compile_modes("default,fastest", True)
    with pytest.raises(UserError, match="add --compile"):
        _parse_compile_modes("reduce-overhead", False)
    assert uses_cuda_graphs("reduce-overhead") and uses_cuda_graphs("max-autotune")
    assert not uses_cuda_graphs("default") and not uses_cuda_graphs("max-autotune-no-cudagraphs") and not uses_cuda_graphs(None)


def test_paths_on_cuda_graphs_warm_up_until_their_passes_replay():
    from types import SimpleNamespace as NS

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert warmup_for(NS(device=cuda, compile_mode="reduce-overhead"), 1) == 2  # run once, record, then replay
    assert warmup_for(NS(device=cuda, compile_mode="reduce-overhead"), 5) == 5
    assert warmup_for(NS(device=cuda, compile_mode="default"), 1) == 1
    assert warmup_for(NS(device=cuda, compile_mode=None), 0) == 0
    assert warmup_for(NS(device=cpu, compile_mode="reduce-overhead"), 1) == 1  # no CUDA graphs on a CPU


def test_the_sweep_estimate_on_a_compiled_path_pays_its_compilation_once():
    compiled = {"compile": "default", "raw": {"first_call_s": 80.5, "seconds": [0.5, 0.4, 0.6]}}
    assert _compile_seconds(compiled) == 80.0
    assert _compile_seconds({"compile": False, "raw": {"first_call_s": 2.0, "seconds": [0.5]}}) == 0.0
    result = {"ratios": {}, "paths": {}, "sweep_estimate": {"serial_s": 800.0, "compile_s": 80.0}}
    assert _targets(result, torch.device("cuda"))["sweep_s"] == 880.0


def test_device_name_asks_torch_for_the_gpu_name(monkeypatch):
    # The CUDA branch runs only on a GPU machine: checked here with torch's call stood in.
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {device}")
    assert device_name(torch.device("cuda:0")) == "GPU cuda:0"
    assert device_name(torch.device("cpu"))


def test_perf_command_measures_both_paths_side_by_side_and_writes_json(tmp_path, capsys):
    out = tmp_path / "perf.json"
    rc = main(["perf", "--backbone", "craft-tiny", "--weights", "random", "--dataset", "eurosat", "--device", "cpu",
               "--candidates", "4", "--repeats", "2", "--generations", "2", "--runs", "1,2",
               "--user-device", "both", "--cma-workers", "both", "--sweep", "scale", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "ratio raw_fast/official" in printed and "sweep" in printed
    assert result["backbone"] == "craft-tiny" and result["classes"] == 10 and result["device_type"] == "cpu"
    assert result["prompt_tokens"] == 16 and result["official_prompt_tokens"] == 16 and result["prefix_shared"]
    for name in ("official", "fast"):
        entry = result["paths"][name]
        assert entry["raw"]["sequences_per_call"] == 40 and entry["raw"]["sequences_per_s"] > 0
        assert len(entry["raw"]["seconds"]) == 2 and entry["raw"]["peak_mem_mib"] > 0
        loops = {x["runs"]: x for x in entry["loop"] if not x["cma_workers"]}
        assert set(loops) == {1, 2}
        # Interleaved fast-path runs are measured with their CMA-ES in worker processes too.
        workers = [x for x in entry["loop"] if x["cma_workers"]]
        assert [(x["runs"], x["interleaved"]) for x in workers] == ([(2, True)] if name == "fast" else [])
        # The thread waits for its CMA-ES workers only where it has them; on a CPU never for a device.
        assert all(0 < x["blocked_share"]["cma_worker"] < 1 and "device" not in x["blocked_share"] for x in workers)
        assert all(x["blocked_share"] == {} for x in entry["loop"] if not x["cma_workers"])
        one = loops[1]
        # 40 candidates + 1 refinement query, 10 classes each, per generation.
        assert one["sequences_per_generation"] == 41 * 10
        assert one["generations_per_s"] > 0 and 0 < one["query_seconds_per_generation"] < one["seconds_per_generation"]
        assert {x["user_device"] for x in entry["loop"]} == {"cpu"}  # --user-device both: on a CPU engine, one place
        assert not one["interleaved"] and loops[2]["interleaved"]
        # Interleaved, each run's generation spans a round of both runs' generations.
        assert loops[2]["sequences_per_generation"] == 41 * 10 and loops[2]["generations_per_s"] > 0
    agree = result["paths"]["fast"]["vs_official"]  # fp32 on CPU: the same features within rounding
    assert agree["features_rel_err"] < 1e-4 and agree["logits_rel_err"] < 1e-4 and agree["top1_agreement"] >= 0.99
    assert "fast against official: text features" in printed
    assert set(result["ratios"]) >= {"raw_fast/official", "loop_runs1_fast/official", "loop_runs2_fast/official",
                                     "loop_runs2_cma-workers_fast/official"}
    assert " 2w " in printed
    sweep = result["sweep_estimate"]
    assert sweep["mode"] == "scale" and len(sweep["datasets"]) == 11 and sweep["user_device"] == "cpu"
    assert math.isclose(sweep["serial_s"], SEEDS * sum(r["run_seconds"] for r in sweep["datasets"]))
    assert result["targets"]["ratio_target"] == 3.0 and "met" in result["targets"]


def test_sweep_measure_scales_what_does_not_fit_its_time_from_the_largest_measured(tmp_path, capsys):
    out = tmp_path / "perf.json"
    rc = main(["perf", "--backbone", "craft-tiny", "--weights", "random", "--dataset", "eurosat", "--device", "cpu",
               "--no-official", "--candidates", "2", "--repeats", "1", "--generations", "1", "--runs", "1",
               "--sweep", "measure", "--sweep-generations", "1", "--sweep-seconds", "0", "--json", str(out)])
    assert rc == 0
    sweep = json.loads(out.read_text())["sweep_estimate"]
    rows = {r["dataset"]: r for r in sweep["datasets"]}
    assert len(rows) == 11 and sweep["mode"] == "measure"
    # No time: only the smallest dataset (EuroSAT: 10 classes x 16 shots) is measured; the rest scale from it.
    assert [k for k, r in rows.items() if r["measured"]] == ["paper-shapes/eurosat"]
    assert sweep["scaled_from"] == "paper-shapes/eurosat"
    assert rows["paper-shapes/imagenet"]["seconds_per_generation"] > rows["paper-shapes/eurosat"]["seconds_per_generation"]
    assert "1 datasets measured, 10 scaled from paper-shapes/eurosat" in capsys.readouterr().out


def test_sweep_measure_interleaves_a_datasets_seeds_and_amortises_their_generations(tmp_path, capsys):
    out = tmp_path / "perf.json"
    rc = main(["perf", "--backbone", "craft-tiny", "--weights", "random", "--dataset", "eurosat", "--device", "cpu",
               "--no-official", "--candidates", "2", "--repeats", "1", "--generations", "1", "--runs", "1",
               "--sweep", "measure", "--sweep-generations", "1", "--sweep-seconds", "0", "--sweep-runs", "2",
               "--json", str(out)])
    assert rc == 0
    sweep = json.loads(out.read_text())["sweep_estimate"]
    assert sweep["interleaved_runs"] == 2 and "interleaved 2 runs in one thread" in sweep["model"]
    assert "concurrent_s" not in sweep  # the runs' concurrency is in the rows already
    assert "one dataset at a time, 2 runs interleaved" in capsys.readouterr().out
    # Refused before anything is measured, with the value named.
    assert main(["perf", "--device", "cpu", "--sweep-runs", "0"]) == 2
    assert "--sweep-runs must be at least 1, got 0" in capsys.readouterr().err
    assert main(["perf", "--device", "cpu", "--server-runs", "0"]) == 2
    assert "--server-runs takes comma-separated positive integers, got '0'" in capsys.readouterr().err


def test_an_interleaved_loop_counts_one_run_its_share_of_a_round():
    loop = {"runs": 4, "seconds_per_generation": 2.0, "query_seconds_per_generation": 0.1,
            "runner_seconds_per_generation": 1.9}
    share = amortised(loop)
    assert share["seconds_per_generation"] == 0.5 and share["runner_seconds_per_generation"] == pytest.approx(0.4)
    assert amortised({**loop, "runs": 1})["seconds_per_generation"] == 2.0


@pytest.mark.slow
def test_server_runs_are_processes_against_one_model_server(tmp_path):
    out = tmp_path / "perf.json"
    rc = main(["perf", "--backbone", "craft-tiny", "--dataset", "eurosat", "--device", "cpu", "--candidates", "4",
               "--repeats", "2", "--generations", "3", "--runs", "1", "--server-runs", "1,2", "--sweep", "off",
               "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    one, server = result["server"]  # one Ray runtime for both
    assert one["runs"] == 1 and server["runs"] == 2 and server["processes"] == 2, server
    assert server["sequences_per_generation"] == 41 * 10  # 40 candidates + the refinement query, 10 classes
    assert server["sequences_per_s"] > 0 and 0 <= server["overlap"] <= 1  # how much the timed spans overlapped
    assert 0 < server["query_seconds_per_generation"] < server["seconds_per_generation"]
    assert result["ratios"]["server_runs2/official_loop_runs1"] > 0
    import ray

    assert not ray.is_initialized()  # the runtime craft perf started is stopped


def test_profile_names_what_a_pass_and_a_generation_spend_their_time_on(tmp_path, capsys):
    out = tmp_path / "perf.json"
    rc = main(["perf", "--backbone", "craft-tiny", "--weights", "random", "--dataset", "eurosat", "--device", "cpu",
               "--no-official", "--candidates", "4", "--repeats", "1", "--generations", "1", "--runs", "1",
               "--sweep", "off", "--profile", "--profile-traces", str(tmp_path / "traces"), "--json", str(out)])
    assert rc == 0
    prof = json.loads(out.read_text())["profile"]["fast"]
    # The generations' timeline, for Perfetto: gzipped Chrome trace JSON with the profiled operations.
    trace = json.loads(gzip.decompress((tmp_path / "traces" / "trace_fast.json.gz").read_bytes()))
    assert prof["generation"]["trace"] == str(tmp_path / "traces" / "trace_fast.json.gz")
    assert any(e.get("name") == "aten::addmm" for e in trace["traceEvents"])
    ps, gen = prof["pass"], prof["generation"]
    assert ps["sequences"] == 4 * 10 and ps["calls"] == 3 and ps["wall_s"] > 0 and ps["host_ops"] > 0
    assert gen["sequences_per_generation"] == 41 * 10 and gen["generations"] == 2 and gen["user_device"] == "cpu"
    # A generation does the pass's work and more: the fitness, CMA-ES, the refinement epoch.
    assert gen["host_ops"] > ps["host_ops"]
    for p in (ps, gen):
        assert "device_busy_s" not in p  # a CPU has no device time
        top = p["host_top"]
        assert top and all(t["name"].startswith("aten::") and t["calls"] > 0 for t in top)
        assert [t["seconds"] for t in top] == sorted((t["seconds"] for t in top), reverse=True)
        assert sum(t["share"] for t in top) <= 1 + 1e-9
    assert [(r["runs_merged"], r["sequences_per_call"]) for r in prof["pass_sizes"]] == [(1, 40), (2, 80)]
    printed = capsys.readouterr().out
    assert "profile fast: a pass of 40 sequences" in printed and "runs merged into one pass: 1: " in printed
    # Refused before any measurement: traces without a profile.
    assert main(["perf", "--device", "cpu", "--profile-traces", str(tmp_path)]) == 2
    assert "--profile-traces writes the profile's timelines: it needs --profile" in capsys.readouterr().err


def test_a_loops_device_busy_share_is_the_profiled_generations_device_time_at_the_loops_rate():
    from measurement.profile import loops_device_busy, render

    gen = {"user_device": "cuda:0", "device_busy_s": 0.02}
    loops = [{"runs": 1, "user_device": "cuda:0", "generations_per_s": 25.0},
             {"runs": 4, "cma_workers": True, "user_device": "cuda:0", "generations_per_s": 40.0},
             {"runs": 1, "user_device": "cpu", "generations_per_s": 10.0},  # worked elsewhere: not comparable
             {"runs": 4, "user_device": "cuda:0", "skipped": "too slow"}]
    busy = loops_device_busy(gen, loops)
    assert [(x["runs"], x["cma_workers"]) for x in busy] == [(1, False), (4, True)]
    assert [x["device_busy_share"] for x in busy] == pytest.approx([0.5, 0.8])
    assert loops_device_busy({"user_device": "cpu"}, loops) == []  # a CPU has no device time
    line = render("fast", {"loops_device_busy": busy})[0]
    assert line == "  the loops kept the device busy about: 1 run 50%, 4 runs (CMA-ES in workers) 80%"


def test_a_saved_profile_prints_again_with_its_loops_device_busy_share(tmp_path, capsys):
    from measurement.profile import main as profile_main

    saved = {"profile": {"fast": {"generation": {"user_device": "cuda:0", "device_busy_s": 0.02, "wall_s": 0.03,
                                                  "host_ops": 5, "host_op_cpu_s": 0.01, "device_ops": 7,
                                                  "device_busy_share": 0.66, "gpu_bound_sequences_per_s": 1000.0,
                                                  "device_top": []}}},
             "paths": {"fast": {"loop": [{"runs": 4, "user_device": "cuda:0", "generations_per_s": 45.0}]}}}
    (tmp_path / "perf.json").write_text(json.dumps(saved))
    assert profile_main([str(tmp_path / "perf.json")]) == 0
    assert "the loops kept the device busy about: 4 runs 90%" in capsys.readouterr().out
    (tmp_path / "bare.json").write_text("{}")
    with pytest.raises(SystemExit):
        profile_main([str(tmp_path / "bare.json")])
    assert "bare.json: no 'profile' in it" in capsys.readouterr().err


def test_the_attention_benchmark_runs_each_backend_and_reports_those_that_cannot(tmp_path, capsys):
    from measurement.attention_backends import main as attention_main

    out = tmp_path / "attention.json"
    assert attention_main(["--backbone", "craft-tiny", "--device", "cpu", "--dataset", "eurosat", "--candidates", "4",
                           "--repeats", "1", "--backends", "auto,math,efficient", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["backends"]
    assert rows["auto"]["features_vs_first"] == 0.0 and rows["auto"]["sequences_per_s"] > 0
    assert rows["math"]["features_vs_first"] < 1e-5  # fp32 on a CPU: the same features up to rounding
    assert "No viable backend" in rows["efficient"]["error"]  # a GPU kernel: none on a CPU
    assert "efficient: error" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        attention_main(["--backends", "auto,fastest"])


def test_perf_runs_as_a_module_where_its_entry_point_is_not_installed() -> None:
    """The device script's fallback, ``python -m measurement.perf``: the same command, the same one-sentence errors."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-m", "measurement.perf", "--backbone", "nope"], capture_output=True, text=True,
                         cwd=repo, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("craft perf: error: unknown backbone 'nope'")
    assert out.stderr.count("\n") == 1


def test_method_loops_report_what_each_methods_queries_encoded():
    """``craft perf --methods``: the images a run's queries encoded are the engine's own count, and
    the rates are those counts over the run's wall time."""
    from benchmark.model.engine import ClipEngine
    from measurement.method_loops import measure_methods, render_methods

    torch.manual_seed(0)
    engine = ClipEngine(load_model("craft-tiny", "random"))
    before = engine.query_images_encoded
    rows = measure_methods(engine, ["bbt", "bpt_vlm", "blackvip"], classes=3, shots=2, seed=0,
                           queries={"bbt": 120, "bpt_vlm": 40, "blackvip": 8})
    by = {r["method"]: r for r in rows}
    assert by["bbt"]["queries"] == 120 and by["bbt"]["query_images"] == 0 and by["bbt"]["text_sequences"] >= 120 * 3
    # every BPT-VLM query re-encodes the 6 training images under its visual prompt
    assert by["bpt_vlm"]["image_side"] and by["bpt_vlm"]["query_images"] >= by["bpt_vlm"]["queries"] * 6 > 0
    assert sum(r["query_images"] for r in rows) == engine.query_images_encoded - before
    for r in rows:
        assert r["images_per_s"] == pytest.approx(r["query_images"] / r["wall_s"])
    text = "\n".join(render_methods(rows))
    assert "bpt_vlm" in text and "images/s" in text
    from craft.budget import one_step
    from craft.methods import make_config

    assert one_step(make_config("blackvip", {"sp_avg": 3})) == 6 and one_step(make_config("lfa", {})) is None
    with pytest.raises(UserError, match="unknown method.*nope"):
        measure_methods(engine, ["nope"], classes=3, shots=2, seed=0)
