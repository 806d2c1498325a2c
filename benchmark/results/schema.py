"""The results schema: one place that says what a result row holds.

Each cell (method x dataset x shots x seed x backbone x hyperparameters) writes one Parquet
file with one row per evaluated dataset: ``dataset`` is what the run trained on,
``eval_dataset`` what the row's ``top1_test`` was measured on (the same, except for the
ImageNet variants of the distribution-shift table). Accuracies are top-1 in percent.

| column | meaning |
|---|---|
| cell_id | stable hash of everything that defines the cell (see ``benchmark.sweep.cell``) |
| status | ``ok`` or ``failed`` (then ``error`` says why, metrics are null) |
| method, dataset, eval_dataset, backbone, weights, shots, seed | what was run |
| hparams | the method's full hyperparameters, JSON (every fidelity switch among them: docs/fidelity.md); ``select: best_test`` (CBBT): accuracies of the epoch best on test (:func:`selected_on_test`) |
| protocol, train_aug | the sweep's protocol (harness or official) and the training augmentation used (null in older folders) |
| shots_used | the fewest training images of any class: below ``shots`` where a class has fewer images than asked (null in older folders) |
| budget, queries | query budget and queries used (one query: one prompt scored on the training images) |
| unbudgeted_queries, text_sequences, images_encoded, model_calls | every model call, counted |
| query_images, image_budget | images encoded to answer image-side queries and feature requests (BPT-VLM, BlackVIP, LFA; 0 for text-side methods), and the cap on those of them made in training (null in older folders: read as 0 images) |
| top1_val, top1_test | few-shot validation and test accuracy (%) |
| learned_params, learned_bytes | size of what the method learned (the deployable part) |
| wall_s, gpu_s, peak_mem_mb | cost of the run (gpu_s: server busy seconds for this run) |
| trace | per generation: queries used, fitness, train loss, val/test accuracy where evaluated |
| code_version, packages, host, started_at, finished_at | provenance: the code (``git describe``), package versions (JSON), where and when |
| precision | the sweep's ``precision`` server option (auto, bf16, fp32); part of the cell id where it is not the protocol's default |
| computed_in | what the run's model server computed in: bf16 or fp32 (``auto`` gives bf16 on a GPU, fp32 for CBBT and on CPUs) |
| compile, attention, colocate | the other server options: torch.compile mode (``false``: none), attention kernel, whether the run ran in its server's process (not in the cell id: same math, other kernels; rounding-level differences) |
| device, cuda_version | the model server's device (the GPU's name, or ``cpu`` with torch's CPU instruction set, e.g. ``cpu (AVX512)``) and torch's CUDA version (null on CPUs) |
| python_version, torch_version, open_clip_version | versions of the run's Python and of torch and open_clip |
| config, config_hash | the resolved sweep config (includes merged; JSON) and the first 16 hex of its sha256, the same for every cell of one sweep |

Columns added after a folder was written read as null (:func:`benchmark.report.load.load_results`).
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

TRACE_TYPE = pa.list_(
    pa.struct(
        [
            ("generation", pa.int32()),
            ("queries", pa.int64()),
            ("fitness", pa.float64()),
            ("train_loss", pa.float64()),
            ("top1_val", pa.float64()),
            ("top1_test", pa.float64()),
        ]
    )
)

SCHEMA = pa.schema(
    [
        ("cell_id", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("method", pa.string()),
        ("dataset", pa.string()),
        ("eval_dataset", pa.string()),
        ("backbone", pa.string()),
        ("weights", pa.string()),
        ("shots", pa.int32()),
        ("seed", pa.int32()),
        ("hparams", pa.string()),
        ("budget", pa.int64()),
        ("queries", pa.int64()),
        ("unbudgeted_queries", pa.int64()),
        ("text_sequences", pa.int64()),
        ("images_encoded", pa.int64()),
        ("model_calls", pa.int64()),
        ("top1_val", pa.float64()),
        ("top1_test", pa.float64()),
        ("learned_params", pa.int64()),
        ("learned_bytes", pa.int64()),
        ("wall_s", pa.float64()),
        ("gpu_s", pa.float64()),
        ("peak_mem_mb", pa.float64()),
        ("trace", TRACE_TYPE),
        ("code_version", pa.string()),
        ("packages", pa.string()),
        ("host", pa.string()),
        ("started_at", pa.timestamp("s", tz="UTC")),
        ("finished_at", pa.timestamp("s", tz="UTC")),
        ("protocol", pa.string()),
        ("train_aug", pa.string()),
        ("shots_used", pa.int32()),
        ("precision", pa.string()),
        ("computed_in", pa.string()),
        ("compile", pa.string()),
        ("attention", pa.string()),
        ("colocate", pa.bool_()),
        ("device", pa.string()),
        ("cuda_version", pa.string()),
        ("python_version", pa.string()),
        ("torch_version", pa.string()),
        ("open_clip_version", pa.string()),
        ("config", pa.string()),
        ("config_hash", pa.string()),
        ("query_images", pa.int64()),
        ("image_budget", pa.int64()),
    ]
)

_TRACE_FIELDS = [f.name for f in TRACE_TYPE.value_type]


def selected_on_test(hparams: str | dict[str, Any] | None) -> bool:
    """Whether a row's accuracies are those of the epoch that scored best on the test set (CBBT's
    ``select: best_test``, the official code's choice) rather than the last epoch's: tables mark it."""
    if isinstance(hparams, str):
        hparams = json.loads(hparams)
    return isinstance(hparams, dict) and hparams.get("select") == "best_test"


def normalise_row(row: dict[str, Any]) -> dict[str, Any]:
    """Fill absent columns with nulls, encode ``hparams`` as JSON, keep only known trace fields."""
    unknown = set(row) - set(SCHEMA.names)
    if unknown:
        raise ValueError(f"result row has columns outside the schema: {sorted(unknown)}")
    out = {name: row.get(name) for name in SCHEMA.names}
    if isinstance(out["hparams"], dict):
        out["hparams"] = json.dumps(out["hparams"], sort_keys=True)
    if isinstance(out["packages"], dict):
        out["packages"] = json.dumps(out["packages"], sort_keys=True)
    if out["trace"] is not None:
        out["trace"] = [{k: t.get(k) for k in _TRACE_FIELDS} for t in out["trace"]]
    return out


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows to a table with exactly :data:`SCHEMA` (raises on a type that does not fit)."""
    return pa.Table.from_pylist([normalise_row(r) for r in rows], schema=SCHEMA)
