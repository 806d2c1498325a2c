"""Class names reach the tokenizer as the official codes write them: underscores as spaces."""

from __future__ import annotations

import pytest
import torch

from benchmark.datasets.loaders import load_dataset
from benchmark.model.engine import ClipEngine, spoken
from benchmark.model.loading import load_model
from benchmark.sweep.cell import Cell
from benchmark.sweep.run_cell import run_cell
from tests.dataset_trees import UNDERSCORED, build_coop_json

# Each method briefly: a few queries, one epoch.
BRIEF = {
    "zero_shot_clip": {},
    "bbt": {"popsize": 4, "intrinsic_dim": 8, "budget": 8, "eval_every": 1},
    "craft": {"popsize": 4, "intrinsic_dim": 8, "budget": 8, "eval_every": 1, "batch_size": 8},
    "cbbt": {"q": 2, "epochs": 2, "batch_size": 4, "adapter_start": 1, "eval_every": 1},
    "coop": {"n_ctx": 4, "epochs": 1, "batch_size": 4},
}


class Recorder:
    """A tokenizer that records every text it is given."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts, *args, **kwargs):
        self.texts += [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, *args, **kwargs)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    build_coop_json(root, "oxford_pets", UNDERSCORED)
    return root


def test_the_loaded_dataset_keeps_the_split_files_names(tree):
    assert load_dataset("oxford_pets", tree).classnames == UNDERSCORED


@pytest.mark.parametrize("method", list(BRIEF))
def test_no_text_reaching_the_tokenizer_holds_an_underscore(tree, server, method):
    recorder = Recorder(server.engine.loaded.tokenizer)
    server.engine.loaded.tokenizer = recorder
    server.engine._class_parts.clear()  # another test's run may have embedded these classes already
    try:
        [row] = run_cell(Cell(method, "oxford_pets", 2, 1, "craft-tiny", "builtin", BRIEF[method], root=str(tree)), server)
    finally:
        server.engine.loaded.tokenizer = recorder.tokenizer
    assert row["status"] == "ok" and row["top1_test"] is not None
    named = [t for t in recorder.texts if any(spoken(n) in t for n in UNDERSCORED)]
    assert named, f"{method}: no class name reached the tokenizer"
    assert not [t for t in recorder.texts if "_" in t]


def test_an_underscored_name_gives_the_features_of_its_spoken_form():
    torch.manual_seed(0)
    engine = ClipEngine(load_model("craft-tiny", "random"))
    ctx = engine.embed_words("a photo of a").unsqueeze(0)
    under = engine.text_features(ctx, engine.class_part(["american_bulldog", "apple_pie"]))
    spaced = engine.text_features(ctx, engine.class_part(["american bulldog", "apple pie"]))
    torch.testing.assert_close(under, spaced)
    torch.testing.assert_close(
        engine.template_features("a photo of a {}.", ["american_bulldog"]),
        engine.template_features("a photo of a {}.", ["american bulldog"]),
    )
    torch.testing.assert_close(engine.embed_words("a_photo_of_a"), engine.embed_words("a photo of a"))
    assert engine.class_part(["american_bulldog"]).classnames == ("american_bulldog",)  # the names stay the split's
