"""The open_clip engine: equal to open_clip's own path, EOT gather per prompt, errors that guide."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from benchmark.model.engine import ClipEngine, EngineBackend, TaskData
from measurement.official_path import OfficialEngine
from benchmark.errors import UserError
from benchmark.model.loading import load_model

NAMES = ["zero", "golden retriever", "a rather long class name of an aircraft"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_model("craft-tiny", "random")


@pytest.mark.parametrize("mode", ["fast", "official"])
def test_logits_equal_open_clip_encode_text_and_encode_image(tiny, mode):
    engine = ClipEngine(tiny) if mode == "fast" else OfficialEngine(tiny)
    p0 = engine.embed_words("a photo of a")
    assert p0.shape == (4, engine.width)
    ours = engine.text_features(p0.unsqueeze(0), engine.class_part(NAMES))[0]
    tokens = tiny.tokenizer([f"a photo of a {n}." for n in NAMES])
    ref = F.normalize(tiny.model.encode_text(tokens), dim=-1)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)

    images = torch.randn(5, 3, 32, 32)
    img = F.normalize(tiny.model.encode_image(images), dim=-1)
    expected = tiny.model.logit_scale.exp() * img @ ref.T
    got = engine.logits(img, ours.unsqueeze(0))[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_eot_gather_a_prompt_feature_ignores_longer_prompts_in_its_batch(tiny):
    engine = ClipEngine(tiny)
    ctx = torch.randn(3, 4, engine.width) * 0.1
    alone = engine.text_features(ctx, engine.class_part(["zero"]))
    mixed = engine.text_features(ctx, engine.class_part(["zero", NAMES[2]]))
    torch.testing.assert_close(mixed[:, 0], alone[:, 0], rtol=1e-5, atol=1e-6)


def test_fast_and_official_paths_agree_on_random_contexts(tiny):
    ctx = torch.randn(6, 4, 64) * 0.2
    fast = ClipEngine(tiny, max_sequences=5)  # chunked across calls
    official = OfficialEngine(tiny)
    a = fast.text_features(ctx, fast.class_part(NAMES))
    b = official.text_features(ctx, official.class_part(NAMES))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("max_sequences, n_cand, seed", [(12, 9, 0), pytest.param(4, 5, 1, marks=pytest.mark.slow)])
def test_compiled_path_is_one_graph_for_every_chunk_and_class_list(tiny, max_sequences, n_cand, seed):
    """12 sequences a pass: 3 classes go in chunks of 4, 4 and 1 candidates, 5 classes with shorter
    names in chunks of 2 and 1. 4 sequences a pass: 2 candidates x 2 classes, so 3 classes would
    leave a chunk of one class (a size-1 dimension, a graph of its own); the classes are cut 3
    (and 5 as 3 + 2) instead. Chunks of other sizes, class counts and name lengths, and single
    candidates (padded to 2) reuse the first graph instead of compiling again."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = ClipEngine(tiny, compile=True, max_sequences=max_sequences)
    plain = ClipEngine(tiny, max_sequences=max_sequences)
    assert compiled.prefix_shared
    ctx = torch.randn(n_cand, 4, compiled.width, generator=torch.Generator().manual_seed(seed)) * 0.2
    for names in (NAMES, ["cat", "dog", "eel", "fox", "gnu"]):
        for n in (n_cand, 1, 2):
            got = compiled.text_features(ctx[:n], compiled.class_part(names))
            torch.testing.assert_close(got, plain.text_features(ctx[:n], plain.class_part(names)), rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


def test_compiled_calls_run_without_duck_sizing_and_matmul_padding():
    """The settings that keep one graph: inductor's matmul padding guards on sizes on CUDA in bf16
    only (so the CPU test above cannot see it; tests/test_gpu.py counts the graphs there)."""
    from torch._inductor import config as inductor_config
    from torch.fx.experimental import _config as fx_config

    from benchmark.model.engine import _one_graph

    seen = []
    call = _one_graph(lambda x: seen.append((inductor_config.shape_padding, fx_config.use_duck_shape)) or x)
    before = (inductor_config.shape_padding, fx_config.use_duck_shape)
    assert call(torch.ones(1)).item() == 1.0
    assert seen == [(False, False)]
    assert (inductor_config.shape_padding, fx_config.use_duck_shape) == before


def test_backend_reports_info_and_refuses_contexts_that_do_not_fit(tiny):
    engine = ClipEngine(tiny)
    feats = {"train": F.normalize(torch.randn(4, 64), dim=-1), "test": F.normalize(torch.randn(7, 64), dim=-1)}
    backend = EngineBackend(engine, TaskData(NAMES, "a photo of a {}.", feats))
    info = backend.info()
    assert info.n_classes == 3 and info.split_sizes == {"train": 4, "test": 7}
    assert info.max_ctx == engine.context_length - 2 - engine.class_part(NAMES).max_len
    out, _ = backend.logits(torch.zeros(2, 4, 64), "test", torch.tensor([0, 2]))
    assert out.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="context tokens do not fit"):
        backend.logits(torch.zeros(1, info.max_ctx + 1, 64), "test")


def test_error_texts_for_unknown_backbone_tag_and_missing_checkpoint(tmp_path):
    with pytest.raises(UserError, match="unknown backbone 'RN51'; paper backbones: RN50, RN101, ViT-B-32, ViT-B-16"):
        load_model("RN51", "openai")
    with pytest.raises(UserError, match="unknown pretrained tag 'opnai' for RN50; known tags: openai"):
        load_model("RN50", "opnai")
    missing = tmp_path / "RN50.pt"
    with pytest.raises(UserError, match=f"checkpoint file not found: {missing}"):
        load_model("RN50", str(missing))
    with pytest.raises(UserError, match="weights 'builtin' exist only for backbone 'craft-tiny'"):
        load_model("RN50", "builtin")


def test_pretrained_tag_not_cached_is_a_clear_error_and_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("benchmark.model.loading._URL_CACHE", tmp_path / "clip")
    with pytest.raises(UserError, match="with pretrained tag 'openai' are not in the local cache .* downloads are off"):
        load_model("RN50", "openai", allow_download=False)
    assert not list(tmp_path.rglob("*.*")), "nothing may be downloaded"


def test_known_backbones_are_open_clips_list_without_importing_it():
    import subprocess
    import sys

    import open_clip

    from benchmark.model.builtin import register_builtin_model
    from benchmark.model.loading import known_backbones

    register_builtin_model()
    assert known_backbones() == sorted(open_clip.list_models())
    assert {"RN50", "RN101", "ViT-B-32", "ViT-B-16", "craft-tiny"} <= set(known_backbones())
    code = "import sys; from benchmark.model.loading import known_backbones; known_backbones(); print('open_clip' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_several_queries_go_in_one_pass_where_merged_and_one_each_on_a_cpu(tiny, monkeypatch):
    engine = ClipEngine(tiny)
    feats = {"train": F.normalize(torch.randn(6, 64, generator=torch.Generator().manual_seed(0)), dim=-1)}
    data = TaskData(NAMES, "a photo of a {}.", feats)
    p0 = engine.embed_words("a photo of a")
    ctx = p0 + 0.2 * torch.randn(5, *p0.shape, generator=torch.Generator().manual_seed(1))
    queries = [ctx[:1], ctx[1:]]  # a refinement query and the next generation's candidates
    separate = [EngineBackend(engine, data).logits(c, "train")[0] for c in queries]
    passes = []
    text_features = engine.text_features
    monkeypatch.setattr(engine, "text_features", lambda c, part: passes.append(c.shape[0]) or text_features(c, part))

    on_cpu, encoded = EngineBackend(engine, data).logits_many(queries, "train")  # the default on a CPU
    assert passes == [1, 4] and encoded == 0
    assert all(torch.equal(a, b) for a, b in zip(on_cpu, separate))  # the run's results unchanged, bit for bit

    passes.clear()
    merged, _ = EngineBackend(engine, data, merge_queries=True).logits_many(queries, "train")  # a GPU's default
    assert passes == [5]  # one pass of the text tower for both
    assert [t.shape for t in merged] == [(1, 6, 3), (4, 6, 3)]
    # The same numbers up to rounding: with 3 classes a lone candidate's BLAS kernels round differently.
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(merged, separate))


@pytest.mark.parametrize("merge, passes", [(True, 1 + 1 + 4 + 1 + 3), (False, 1 + 2 + 4 + 2 + 3)])
def test_a_craft_generation_queries_its_refinement_prompt_and_next_candidates_in_one_pass(tiny, monkeypatch, merge, passes):
    """4 generations, evaluated after the 2nd and the 4th: the first candidates; then per generation the
    refinement query with the next candidates, but where it evaluates, the refinement query, val and
    test, and then the next candidates (none after the last)."""
    from measurement.loops import Shapes, synthetic_task
    from craft.blackbox import MeteredBlackBox
    from craft.methods import get_method, make_config

    engine = ClipEngine(tiny)
    data, task = synthetic_task(engine, Shapes("t", classes=3, train=12, val=4, test=4), NAMES, seed=0)
    calls = []
    text_features = engine.text_features
    monkeypatch.setattr(engine, "text_features", lambda c, part: calls.append(c.shape[0]) or text_features(c, part))
    box = MeteredBlackBox(EngineBackend(engine, data, merge_queries=merge), 10_000)
    cfg = make_config("craft", {"popsize": 4, "intrinsic_dim": 8, "budget": 4 * 4, "eval_every": 2})
    result = get_method("craft").run(box, task, cfg, 0)
    assert len(calls) == passes and result.usage["queries"] == 16 and len(result.trace) == 4
    assert calls[:2] == ([4, 1 + 4] if merge else [4, 1])


def test_merged_queries_of_different_context_lengths_go_one_pass_each(tiny):
    engine = ClipEngine(tiny)
    feats = {"train": F.normalize(torch.randn(6, 64, generator=torch.Generator().manual_seed(0)), dim=-1)}
    backend = EngineBackend(engine, TaskData(NAMES, "a photo of a {}.", feats), merge_queries=True)
    long, short = engine.embed_words("a photo of a"), engine.embed_words("a photo")
    out, _ = backend.logits_many([long.expand(3, -1, -1), short.unsqueeze(0)], "train")
    assert [t.shape for t in out] == [(3, 6, 3), (1, 6, 3)]
    assert torch.equal(out[1], backend.logits(short.unsqueeze(0), "train")[0])


def test_the_attention_kernel_can_be_held_to_one_backend(tiny):
    ctx = torch.randn(3, 4, 64) * 0.2
    auto, math = ClipEngine(tiny), ClipEngine(tiny, attention="math")
    torch.testing.assert_close(math.text_features(ctx, math.class_part(NAMES)), auto.text_features(ctx, auto.class_part(NAMES)),
                               rtol=1e-5, atol=1e-6)
    held = ClipEngine(tiny, attention="efficient")  # a GPU kernel: held to it, a CPU has no way to run the call
    with pytest.raises(RuntimeError, match="No viable backend"):
        held.text_features(ctx, held.class_part(NAMES))
    held.encode_images([torch.zeros(3, 32, 32)], transform=lambda x: x, loader=lambda x: x)  # the image tower is not held
    with pytest.raises(ValueError, match="attention must be one of auto, math, efficient, cudnn, flash, got 'fastest'"):
        ClipEngine(tiny, attention="fastest")


def test_a_tag_trained_with_quick_gelu_is_built_with_it(monkeypatch) -> None:
    """open_clip 3 builds ``RN50`` with GELU even for its ``openai`` tag (it only warns): the loader
    asks for QuickGELU wherever the tag was trained with it, and never for a checkpoint path."""
    import open_clip

    import benchmark.model.loading as loading

    seen = []

    def create(backbone, pretrained=None, device=None, force_quick_gelu=False):
        seen.append((backbone, pretrained, force_quick_gelu))
        raise RuntimeError("stop here")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", create)
    monkeypatch.setattr(loading, "_cached_pretrained", lambda backbone, tag: "/cache/file")
    for backbone, tag in (("RN50", "openai"), ("ViT-B-16", "openai"), ("ViT-B-32", "laion2b_s34b_b79k")):
        with pytest.raises(UserError):
            load_model(backbone, tag)
    with pytest.raises(UserError):
        load_model("RN50", __file__)  # a path: the backbone's name decides (RN50-quickgelu for OpenAI files)
    assert seen == [("RN50", "openai", True), ("ViT-B-16", "openai", True), ("ViT-B-32", "laion2b_s34b_b79k", False),
                    ("RN50", __file__, False)]
