"""Every row says how it was served and on what (issue 22, item 4); precision is part of a cell's identity."""

from __future__ import annotations

import datetime as dt
import json
import platform
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import torch

from benchmark.report.load import load_results
from benchmark.results import schema
from benchmark.results.schema import SCHEMA, to_table
from benchmark.results.store import write_cell
from benchmark.serve.options import ServerOptions
from benchmark.serve.server import ModelServer
from benchmark.sweep.cell import Cell
from benchmark.sweep.config import config_from_dict
from benchmark.sweep.plan import expand
from benchmark.sweep.run_cell import result_rows
from craft.methods import RunResult
from benchmark.sweep.runner import sweep_provenance

DEMO = {"out": "unused", "methods": ["zero_shot_clip", "bbt", "craft"], "datasets": ["digits_noise"],
        "shots": [16], "seeds": [1], "backbones": ["craft-tiny:builtin"]}
DEMO_IDS = ["aaf00a1bf8a617a81b47", "1e857e72b55dc53a9d74", "70f4a86656b058862abd"]  # craft demo's, from before


def ids(**changes) -> list[str]:
    return [c.cell_id for c in expand(config_from_dict({**DEMO, **changes}))]


def test_precision_enters_the_cell_id_only_where_it_is_not_the_default() -> None:
    assert ids() == ids(precision="auto") == DEMO_IDS  # craft demo reuses what it ran before
    bf16, fp32 = ids(precision="bf16"), ids(precision="fp32")
    assert len({*bf16, *fp32, *DEMO_IDS}) == 9  # never overwrite or mix
    assert ids(protocol="official") == ids(protocol="official", precision="fp32")  # fp32 is official's default
    assert ids(protocol="official", precision="auto") != ids(protocol="official")
    assert ids(compile=True) == ids(attention="math") == ids(colocate=True) == DEMO_IDS  # speed switches: same cells


def test_rows_record_server_options_device_versions_and_the_resolved_config(tmp_path: Path) -> None:
    """The rows of a run as the driver writes them: ``result_rows`` with what the server's release said
    (:meth:`ModelServer.device_info`, here of a CPU engine), stamped with :func:`sweep_provenance`."""
    cfg = config_from_dict({**DEMO, "methods": ["bbt"], "compile": "reduce-overhead"}, "sweep.yaml")
    [cell] = expand(cfg)
    cpu = ModelServer.device_info(SimpleNamespace(engine=SimpleNamespace(device=torch.device("cpu"), bf16=False)))
    assert cpu == {"device": f"cpu ({torch.backends.cpu.get_cpu_capability()})", "cuda_version": None, "computed_in": "fp32"}  # CPUs compute in fp32
    result = RunResult("bbt", cell.full_hparams(), {"top1_test": 50.0}, {"queries": 400, "unbudgeted_queries": 0,
                       "text_sequences": 4000, "images_encoded": 0, "calls": 10})
    rows = result_rows(cell, result, 400, dt.datetime.now(dt.timezone.utc), 0, {"gpu_s": 1.0, **cpu}, None)
    stamp = sweep_provenance(cfg.server, cfg)
    [row] = pq.read_table(write_cell(str(tmp_path), [{**r, **stamp} for r in rows])).to_pylist()
    assert row["precision"] == "auto" and row["compile"] == "reduce-overhead" and row["attention"] == "auto"
    assert row["colocate"] is False and row["device"] == f"cpu ({torch.backends.cpu.get_cpu_capability()})" and row["cuda_version"] is None
    assert row["computed_in"] == "fp32"
    assert row["python_version"] == platform.python_version() and row["torch_version"] and row["open_clip_version"]
    assert json.loads(row["config"])["methods"] == ["bbt"] and len(row["config_hash"]) == 16
    moved = config_from_dict({**DEMO, "methods": ["bbt"], "compile": "reduce-overhead"}, "elsewhere.yaml")
    assert sweep_provenance(cfg.server, moved)["config_hash"] == row["config_hash"]  # the content, not the path
    assert sweep_provenance(ServerOptions(), moved)["compile"] == "false"
    assert sweep_provenance(ServerOptions(), None).keys() == {"precision", "compile", "attention", "colocate"}


def test_a_folder_from_before_the_provenance_columns_still_reads(tmp_path: Path) -> None:
    [cell] = expand(config_from_dict({**DEMO, "methods": ["bbt"]}))
    row = {"cell_id": cell.cell_id, "status": "ok", "method": "bbt", "dataset": "digits_noise", "eval_dataset": "digits_noise",
           "backbone": "craft-tiny", "shots": 16, "seed": 1, "top1_test": 50.0}
    new = {"precision", "computed_in", "compile", "attention", "colocate", "device", "cuda_version", "python_version",
           "torch_version", "open_clip_version", "config", "config_hash"}
    old = to_table([row]).drop_columns(sorted(new))
    (tmp_path / "bbt").mkdir()
    pq.write_table(old, tmp_path / "bbt" / f"{cell.cell_id}.parquet")
    df = load_results(tmp_path)
    assert list(df.columns) == SCHEMA.names and df[sorted(new)].isna().all().all()
    assert all(name in schema.__doc__ for name in SCHEMA.names)  # the schema module documents each column
