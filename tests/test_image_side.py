"""Image-side queries (BPT-VLM, BlackVIP, LFA): the engine's prompted image tower, the contract's counting
and budgets, and one hand-checked piece of each method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.model.engine import ClipEngine, EngineBackend, TaskData
from benchmark.model.loading import load_model
from craft.blackbox import BudgetExceeded, MeteredBlackBox, VisualPrompt
from craft.methods import Task, get_method, make_config
from craft.methods.base import run_budget, run_image_budget
from craft.methods.bptvlm import BPTVLMConfig, Projections
from craft.methods.lfa import least_squares, procrustes
from craft.spsa import SPSAGC, directions, estimate
from tests.fakes import LinearBackend

NAMES = ["zero", "one", "two"]
N_TRAIN, N_VAL = 12, 6
RANGE = ((-1.8, 1.9), (-1.7, 2.0), (-1.5, 2.1))


@pytest.fixture(scope="module")
def engine():
    torch.manual_seed(0)
    return ClipEngine(load_model("craft-tiny", "random"))


def _task(engine: ClipEngine) -> TaskData:
    gen = torch.Generator().manual_seed(1)
    # inside every channel's valid range, so that a zero pixel prompt (then clipped) leaves them as they are
    pixels = {k: torch.rand(n, 3, 32, 32, generator=gen) * 2.9 - 1.4 for k, n in (("train", N_TRAIN), ("val", N_VAL))}
    with torch.no_grad():
        feats = {k: F.normalize(engine.model.encode_image(v), dim=-1) for k, v in pixels.items()}
    labels = {"train": torch.arange(N_TRAIN) % 3, "val": torch.arange(N_VAL) % 3}
    return TaskData(NAMES, "a photo of a {}.", feats, labels=labels, pixel_source=pixels.__getitem__, pixel_range=RANGE)


def _box(engine: ClipEngine, budget: int = 1000, image_budget: int | None = None):
    data = _task(engine)
    return MeteredBlackBox(EngineBackend(engine, data), budget, image_budget), data


def _method_task(data: TaskData) -> Task:
    return Task("digits_noise", NAMES, data.template, data.labels, shots=4, eval_splits=("val",))


# ----------------------------------------------------------------- engine
def test_prompted_tower_without_prompt_is_open_clips_and_candidates_batch_as_one_by_one(engine):
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = engine.model.encode_image(x)
        no_tokens = engine._vision_prompted(x, torch.zeros(4, 0, engine.vision_width()))
    torch.testing.assert_close(no_tokens, ref, rtol=1e-5, atol=1e-6)
    tokens = torch.randn(3, 2, engine.vision_width()) * 0.5
    before = engine.query_images_encoded
    batched = engine.encode_prompted(x, VisualPrompt(tokens=tokens), RANGE)
    assert engine.query_images_encoded - before == 3 * 4
    alone = torch.cat([engine.encode_prompted(x, VisualPrompt(tokens=tokens[i : i + 1]), RANGE) for i in range(3)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batched[0], F.normalize(ref, dim=-1), atol=1e-3)  # the tokens change the features


def test_zero_pixel_prompt_scores_the_tasks_own_features(engine):
    box, data = _box(engine)
    zero = VisualPrompt(pixels=torch.zeros(1, 3, 32, 32))
    got = box.image_logits(None, zero, "val", budgeted=False)[0]
    text = engine.template_features(data.template, NAMES)
    torch.testing.assert_close(got, engine.logits(data.features["val"], text), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- contract
def test_image_queries_are_counted_exactly_and_refused_past_either_budget_before_compute(engine):
    box, _ = _box(engine, budget=5, image_budget=3 * N_TRAIN)
    tokens = torch.zeros(2, 1, engine.vision_width())
    start = engine.query_images_encoded
    box.image_logits(box.embed_words("a").unsqueeze(0), VisualPrompt(tokens=tokens), "train")
    assert (box.usage.queries, box.usage.budgeted_images, box.usage.query_images) == (2, 2 * N_TRAIN, 2 * N_TRAIN)
    with pytest.raises(BudgetExceeded, match="image budget"):
        box.image_logits(None, VisualPrompt(tokens=tokens), "train")  # 2 x 12 > 12 images left
    box.image_logits(None, VisualPrompt(tokens=tokens[:1]), "train", torch.arange(4))  # 4 images: fits
    box.image_logits(None, VisualPrompt(tokens=tokens), "val", budgeted=False)  # evaluations: not budgeted
    assert box.usage.queries == 3 and box.usage.budgeted_images == 2 * N_TRAIN + 4
    assert box.usage.query_images == 2 * N_TRAIN + 4 + 2 * N_VAL == engine.query_images_encoded - start
    with pytest.raises(BudgetExceeded, match="query budget"):
        box.image_logits(None, VisualPrompt(tokens=torch.zeros(3, 1, engine.vision_width())), "train", torch.arange(1))
    with pytest.raises(ValueError, match="training images only"):
        box.image_logits(None, VisualPrompt(tokens=tokens), "val")
    assert engine.query_images_encoded - start == box.usage.query_images  # refusals encoded nothing


def test_bad_visual_prompts_and_text_only_boxes_get_one_sentence(engine):
    box, _ = _box(engine)
    with pytest.raises(ValueError, match=r"pixel prompt must have shape \(2, 3, 32, 32\)"):
        box.image_logits(None, VisualPrompt(pixels=torch.zeros(2, 3, 16, 16)), "train")
    with pytest.raises(ValueError, match="visual prompt tokens must have shape"):
        box.image_logits(None, VisualPrompt(tokens=torch.zeros(1, 2, 7)), "train")
    with pytest.raises(ValueError, match="tokens or pixels"):
        box.image_logits(None, VisualPrompt(), "train")
    with pytest.raises(ValueError, match="serves no image-side queries"):
        MeteredBlackBox(LinearBackend(), 10).image_features("train")


# ----------------------------------------------------------------- LFA
def test_lfa_closed_form_equals_numpy_procrustes_and_least_squares():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    y = x @ rotation + 0.01 * rng.normal(size=(40, 6))
    u, _, vh = np.linalg.svd(x.T @ y)  # orthogonal Procrustes by hand
    w = procrustes(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(w, u @ vh, atol=1e-5)
    np.testing.assert_allclose(w, rotation, atol=0.01)  # recovers the rotation
    half = procrustes(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32), beta=0.5).double().numpy()
    np.testing.assert_allclose(half, 0.5 * (u @ vh) + 0.5 * np.eye(6), atol=1e-5)
    ls = least_squares(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(ls, np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-5)


def test_lfa_asks_for_the_training_features_once_within_its_image_budget(engine):
    lfa, cfg = get_method("lfa"), make_config("lfa", {"n_iters": 5, "beta_tries": 3, "beta_samples": 1})
    assert run_budget(lfa, cfg, 4, "digits_noise", 3) == 0 and run_image_budget(lfa, cfg, 0, N_TRAIN, "x") == N_TRAIN
    box, data = _box(engine, budget=0, image_budget=N_TRAIN)
    result = lfa.run(box, _method_task(data), cfg, seed=1)
    assert result.usage["budgeted_images"] == N_TRAIN and result.usage["query_images"] == N_TRAIN + N_VAL
    assert result.usage["queries"] == 0 and 0 <= result.metrics["top1_val"] <= 100
    short, data = _box(engine, budget=0, image_budget=N_TRAIN - 1)
    with pytest.raises(BudgetExceeded, match="image budget"):
        lfa.run(short, _method_task(data), cfg, seed=1)


# ----------------------------------------------------------------- BPT-VLM
def test_bpt_vlm_projections_have_the_official_shapes_and_moments():
    cfg = BPTVLMConfig(intrinsic_dim_l=50, intrinsic_dim_v=40, n_prompt_tokens_l=8, n_prompt_tokens_v=5, sigma=2.0)
    stats = {"token_std": 0.02, "patch_mean": 0.01, "patch_std": 0.04, "patch_fan_in": 3072.0}
    p = Projections(cfg, width=64, vision_width=32, stats=stats, gen=torch.Generator().manual_seed(0))
    assert p.A_L.shape == (8 * 64, 50) and p.A_V.shape == (5 * 32, 40)
    assert p.std_l == pytest.approx(0.02 / (50**0.5 * 2.0))
    assert p.mean_v == pytest.approx(0.01 * 3072 / 40) and p.std_v == pytest.approx(0.04 * (3072 / 40) ** 0.5 * 2.0)
    assert float(p.A_L.std()) == pytest.approx(p.std_l, rel=0.05) and float(p.A_V.mean()) == pytest.approx(p.mean_v, abs=0.04)
    ctx, tokens = p(np.zeros((3, 90)))
    assert ctx.shape == (3, 8, 64) and tokens.shape == (3, 5, 32) and float(ctx.abs().max()) == 0.0


def test_bpt_vlm_stays_within_both_budgets_and_counts_what_the_engine_encoded(engine):
    bpt = get_method("bpt_vlm")
    cfg = make_config("bpt_vlm", {"intrinsic_dim_l": 6, "intrinsic_dim_v": 6, "n_prompt_tokens_l": 2,
                                  "n_prompt_tokens_v": 2, "popsize": 4, "budget": 14, "test_every": 2, "bound": 0.5})
    assert run_image_budget(bpt, cfg, 14, N_TRAIN, "x") == 14 * N_TRAIN
    for image_budget, generations in ((None, 3), (2 * 4 * N_TRAIN + 5, 2)):
        box, data = _box(engine, budget=14, image_budget=image_budget)
        start = engine.query_images_encoded
        result = bpt.run(box, _method_task(data), cfg, seed=3)
        assert result.usage["queries"] == 4 * generations <= 14
        assert result.usage["budgeted_images"] == 4 * generations * N_TRAIN
        assert result.usage["query_images"] == engine.query_images_encoded - start
        assert len(result.trace) == generations


# ----------------------------------------------------------------- BlackVIP
def test_spsa_estimate_of_a_quadratic_is_its_directional_derivative_and_unbiased():
    a = torch.tensor([[3.0, 0.5, 0.0], [0.5, 2.0, 0.2], [0.0, 0.2, 1.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    w = torch.tensor([0.3, -0.1, 0.7], dtype=torch.float64)
    loss = lambda v: 0.5 * v @ a @ v + b @ v  # noqa: E731
    grad = a @ w + b  # the true gradient
    ck = 0.01
    one = directions(1, 3, torch.Generator().manual_seed(0)).double()
    g1 = estimate(loss(w + ck * one[0]).view(1), loss(w - ck * one[0]).view(1), one, ck)
    torch.testing.assert_close(g1 * one[0], (one[0] @ grad).expand(3))  # exact for a quadratic: (d . g) / d_i
    d = directions(40000, 3, torch.Generator().manual_seed(1)).double()
    assert bool(((d.abs() >= 0.5) & (d.abs() <= 1.0)).all())
    many = lambda v: 0.5 * torch.einsum("ni,ij,nj->n", v, a, v) + v @ b  # noqa: E731  (the loss, row by row)
    plus, minus = many(w + ck * d), many(w - ck * d)
    torch.testing.assert_close(estimate(plus, minus, d, ck), grad, atol=0.08, rtol=0)
    opt = SPSAGC(a=0.01, o=1.0, alpha=0.4, b1=0.9)
    g = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    w1 = opt.update(torch.zeros(3, dtype=torch.float64), g, 1)  # m = g; w - a1 (g + 0.9 g)
    torch.testing.assert_close(w1, -0.01 / 2**0.4 * 1.9 * g)
    w2 = opt.update(w1, g, 2)  # m = 0.9 g + g
    torch.testing.assert_close(w2, w1 - 0.01 / 3**0.4 * (g + 0.9 * 1.9 * g))


def test_blackvip_spends_its_schedule_exactly_and_counts_what_the_engine_encoded(engine):
    vip = get_method("blackvip")
    cfg = make_config("blackvip", {"epochs": 2, "batch_size": 5, "sp_avg": 2, "eval_every": 1})
    budget = run_budget(vip, cfg, 4, "digits_noise", 3)
    assert budget == 2 * 2 * 2 * 2  # epochs x floor(12 / 5) steps x 2 sp_avg
    image_budget = run_image_budget(vip, cfg, budget, N_TRAIN, "x")
    box, data = _box(engine, budget=budget, image_budget=image_budget)
    start = engine.query_images_encoded
    result = vip.run(box, _method_task(data), cfg, seed=2)
    assert result.usage["queries"] == budget and result.usage["budgeted_images"] == budget * 5 <= image_budget
    assert result.usage["query_images"] == engine.query_images_encoded - start == budget * 5 + 2 * N_VAL
    short, data = _box(engine, budget=budget - 1)
    assert vip.run(short, _method_task(data), cfg, seed=2).usage["queries"] == budget - 4  # whole steps only


# ----------------------------------------------------------------- serve path
def test_image_side_queries_travel_client_to_server_on_the_tasks_own_images(builtin_cache):
    """Through the client (a local server, as a Ray actor is called): the pixels served are the images the
    training features were encoded from (the seeded pass), so a zero pixel prompt scores as the cached
    features do, and the counts arrive whole."""
    from benchmark.datasets.task_spec import TaskSpec
    from benchmark.serve.client import RemoteBackend
    from benchmark.serve.options import ServerOptions
    from benchmark.serve.server import ModelServer

    server = ModelServer("craft-tiny", "builtin", ServerOptions(batching=False))
    backend = RemoteBackend(server, TaskSpec("digits_rotate", 2, 1))
    info = backend.info()
    assert info.image_side and info.image_shape == (3, 32, 32) and info.vision_width == 64
    box = MeteredBlackBox(backend, budget=10, image_budget=100)
    n = info.split_sizes["train"]
    assert box.pixels("train").shape == (n, 3, 32, 32)
    zero = box.image_logits(None, VisualPrompt(pixels=torch.zeros(1, 3, 32, 32)), "train")[0]
    torch.testing.assert_close(zero, box.template_logits(backend.prepared["template"], "train"), rtol=1e-4, atol=1e-4)
    feats = box.image_features("train")
    torch.testing.assert_close(feats, box.features(box.embed_words("a"), "train", budgeted=False).image)
    assert (box.usage.queries, box.usage.budgeted_images, box.usage.query_images) == (1, 2 * n, 2 * n)
    assert server.engine.query_images_encoded == n
    backend.release()


def test_blackvip_decoder_sums_as_torchs_transposed_convolutions():
    from craft.methods.blackvip import BlackVIPConfig, Coordinator

    coord = Coordinator((3, 32, 32), BlackVIPConfig(), seed=0).eval()
    for p in coord.body.parameters():  # non-trivial batch-norm statistics and biases
        p.data.normal_(generator=torch.Generator().manual_seed(1))
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    z = coord.features(x)
    cube = torch.cat([z, coord.trigger.expand(4, -1)], dim=1).view(4, coord.src_channels, coord.grid, coord.grid)
    with torch.no_grad():
        ours, torchs = coord(x), coord.body(cube)
    assert float(torchs.abs().max()) > 1.0  # not a comparison of zeros
    torch.testing.assert_close(ours, torchs, rtol=1e-4, atol=1e-5 * float(torchs.abs().max()))
