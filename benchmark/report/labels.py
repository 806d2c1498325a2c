"""Display names and row/column orders: the paper's order first, then the registry's, then alphabetical."""

from __future__ import annotations

from functools import cache

from benchmark.datasets.registry import get_spec, list_datasets
from benchmark.errors import UserError
from benchmark.report.published import published_results

ZERO_SHOT = "zero_shot_clip"  # learns nothing: one row whatever its shots
WHITE_BOX = "coop"  # the method whose memory the cost table compares against
METHOD_LABELS = {
    ZERO_SHOT: "ZS-CLIP", "bbt": "BBT", "bpt_vlm": "BPT-VLM", "blackvip": "BlackVIP", "lfa": "LFA", "cbbt": "CBBT",
    WHITE_BOX: "CoOp", "craft": "CraFT",
}


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def method_key(method: str) -> tuple[int, str]:
    """Sort key: the paper's methods in table order, then any other alphabetically."""
    order = list(METHOD_LABELS)
    return (order.index(method), "") if method in order else (len(order), method)


@cache
def _paper_order(column: str, kind: str | None = None) -> tuple[str, ...]:
    """Values of ``column`` in the order the published csv first names them (the paper's order)."""
    return tuple(dict.fromkeys(published_results(kind)[column]))


def paper_datasets() -> list[str]:
    """The 11 few-shot datasets in the paper's column order."""
    return list(_paper_order("dataset", "few-shot"))


def backbone_key(backbone: str) -> tuple[int, str]:
    order = _paper_order("backbone")
    return (order.index(backbone), "") if backbone in order else (len(order), backbone)


@cache
def _registry_order() -> tuple[str, ...]:
    return tuple(s.key for s in list_datasets() + list_datasets("paper-shapes"))


def dataset_key(dataset: str) -> tuple[int, int, str]:
    """Sort key: the paper's few-shot order, then the registry's (ImageNet variants, built-in), then alphabetical."""
    if dataset in paper_datasets():
        return (0, paper_datasets().index(dataset), "")
    if dataset in _registry_order():
        return (1, _registry_order().index(dataset), "")
    return (2, 0, dataset)


def dataset_label(dataset: str) -> str:
    """The registry's display name (``Flowers102``), or the key for a dataset it does not know."""
    try:
        return get_spec(dataset).name
    except UserError:
        return dataset
