"""Protocols: which side of each fidelity switch a sweep takes.

``harness`` (the default) runs every method with its config defaults, which are the official
code's choices except where docs/fidelity.md says otherwise (CMA-ES's eigendecomposition interval,
CBBT's last-epoch report, the built-in suite's augmentation). ``official`` sets every one of those
switches to the official code's side. A sweep's explicit ``hparams`` still override either.
"""

from __future__ import annotations

from typing import Any

from benchmark.datasets.registry import get_spec

HARNESS = "harness"
OFFICIAL = "official"
PROTOCOLS = (HARNESS, OFFICIAL)

# Method hyperparameters whose defaults differ from the official code's, at the official value.
_OFFICIAL_HPARAMS: dict[str, dict[str, Any]] = {
    "bbt": {"cma_eigen_gap": 1.0},
    "craft": {"cma_eigen_gap": 1.0},
    "cbbt": {"select": "best_test"},
}
# CraFT's official training augmentation (main_craft.py), for the datasets whose own differs (the
# built-in digits: flips and crops change a digit, so the harness does not augment them).
OFFICIAL_TRAIN_AUG = "rrc_flip"


def protocol_hparams(protocol: str, method: str) -> dict[str, Any]:
    """The hyperparameters ``protocol`` sets for ``method``, beneath a sweep's own."""
    return dict(_OFFICIAL_HPARAMS.get(method, {})) if protocol == OFFICIAL else {}


# CoOp's (Dassl's) training augmentation on every dataset: RandomResizedCrop scale (0.08, 1) + flip.
COOP_TRAIN_AUG = "rrc_flip_imagenet"


def protocol_train_aug(protocol: str, dataset: str, method: str = "") -> str | None:
    """The training augmentation ``protocol`` puts in place of the dataset's own; None: the dataset's.

    CoOp trains with Dassl's augmentation on the real datasets under either protocol; the built-in
    digits keep theirs (none) unless the protocol is official."""
    own = get_spec(dataset).train_aug
    if method == "coop" and (own != "none" or protocol == OFFICIAL):
        return COOP_TRAIN_AUG if own != COOP_TRAIN_AUG else None
    if protocol != OFFICIAL:
        return None
    return OFFICIAL_TRAIN_AUG if own == "none" else None
