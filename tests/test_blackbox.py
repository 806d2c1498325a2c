"""The black-box contract: exact counting and a budget that is never exceeded."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from craft.blackbox import BudgetExceeded, MeteredBlackBox
from tests.fakes import LinearBackend

call = st.tuples(
    st.integers(min_value=1, max_value=7),  # candidates
    st.sampled_from(["train", "val", "test"]),
    st.booleans(),  # budgeted
    st.booleans(),  # on a mini-batch
)


@settings(max_examples=150, deadline=None)
@given(budget=st.integers(min_value=0, max_value=40), calls=st.lists(call, max_size=25))
def test_budget_never_exceeded_and_counts_exact(budget, calls):
    backend = LinearBackend()
    box = MeteredBlackBox(backend, budget)
    expected_q = expected_unbudgeted = expected_seq = expected_calls = 0
    for n, split, budgeted, batch in calls:
        ctx = torch.zeros(n, 4, backend.width)
        idx = torch.arange(3) if batch else None
        before = len(backend.calls)
        if budgeted and split != "train":
            with pytest.raises(ValueError, match="training images only"):
                box.logits(ctx, split, idx, budgeted=True)
            assert len(backend.calls) == before
            continue
        if budgeted and expected_q + n > budget:
            with pytest.raises(BudgetExceeded) as err:
                box.logits(ctx, split, idx, budgeted=True)
            msg = str(err.value)
            assert f"budget {budget}" in msg and f"{n} candidate(s) asked" in msg
            assert len(backend.calls) == before, "a refused call must not reach the model"
            continue
        out = box.logits(ctx, split, idx, budgeted=budgeted)
        assert out.shape == (n, 3 if batch else 20, backend.n_classes)
        expected_q += n if budgeted else 0
        expected_unbudgeted += 0 if budgeted else n
        expected_seq += n * backend.n_classes
        expected_calls += 1
        assert box.usage.queries <= budget
    assert box.usage.queries == expected_q
    assert box.usage.unbudgeted_queries == expected_unbudgeted
    assert box.usage.text_sequences == expected_seq
    assert box.usage.calls == expected_calls == len(backend.calls)
    assert box.remaining() == budget - expected_q


def test_bad_shapes_and_splits_are_refused():
    box = MeteredBlackBox(LinearBackend(), 10)
    with pytest.raises(ValueError, match=r"contexts must have shape \(candidates, n_ctx <= 8, 8\)"):
        box.logits(torch.zeros(2, 4, 9))
    with pytest.raises(ValueError, match="unknown image set 'holdout'"):
        box.logits(torch.zeros(1, 4, 8), "holdout", budgeted=False)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        MeteredBlackBox(LinearBackend(), -1)
    assert box.usage.calls == 0


class ManyBackend(LinearBackend):
    """A LinearBackend that answers several queries in one call, as the engine does."""

    def logits_many(self, contexts, split):
        splits = [split] * len(contexts) if isinstance(split, str) else split
        out = [LinearBackend.logits(self, c, s)[0] for c, s in zip(contexts, splits)]
        del self.calls[-len(contexts):]
        self.calls.append((sum(c.shape[0] for c in contexts), split))
        return out, 0


@pytest.mark.parametrize("backend_cls", [LinearBackend, ManyBackend])
def test_logits_many_counts_and_answers_as_separate_calls(backend_cls):
    ctx = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(1))
    queries = [(ctx[:1], False), (ctx[1:], True)]
    many, alone = MeteredBlackBox(backend_cls(), 10), MeteredBlackBox(LinearBackend(), 10)
    got = many.logits_many(queries, "train")
    want = [alone.logits(c, "train", budgeted=b) for c, b in queries]
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert many.usage == alone.usage  # each query counted as a call of its own
    # One backend call where the backend takes several queries, else one per query.
    assert many._backend.calls == ([(3, "train")] if backend_cls is ManyBackend else [(1, "train"), (2, "train")])
    assert many.logits_many([], "train") == []


def test_logits_many_refuses_them_all_before_any_compute():
    box = MeteredBlackBox(ManyBackend(), 5)
    ctx = torch.zeros(3, 2, 8)
    # 3 + 3 budgeted queries pass a budget of 5 together, though each alone fits.
    with pytest.raises(BudgetExceeded, match="6 candidate"):
        box.logits_many([(ctx, True), (ctx[:1], False), (ctx, True)], "train")
    with pytest.raises(ValueError, match="budgeted queries score training images only"):
        box.logits_many([(ctx, False), (ctx, True)], "val")
    assert box._backend.calls == [] and box.usage.calls == 0 and box.remaining() == 5


def test_logits_many_counts_the_queries_answered_before_a_backend_failure():
    class FailsSecond(LinearBackend):
        def logits(self, contexts, split, indices=None):
            if len(self.calls) == 1:
                raise RuntimeError("backend down")
            return super().logits(contexts, split, indices)

    box = MeteredBlackBox(FailsSecond(), 10)
    with pytest.raises(RuntimeError, match="backend down"):
        box.logits_many([(torch.zeros(2, 2, 8), True), (torch.zeros(3, 2, 8), True)], "train")
    assert box.usage.queries == 2 and box.usage.calls == 1  # as two separate calls, the first answered


def test_view_split_names_round_trip_and_nothing_else_parses():
    from craft.blackbox import parse_view_split, view_split

    assert parse_view_split(view_split(0)) == (0, False)
    assert parse_view_split(view_split(17, raw=True)) == (17, True)
    for other in ("train", "val", "test:imagenet_a", "train@", "train@x/raw", "train@-1"):
        assert parse_view_split(other) is None, other
    with pytest.raises(ValueError):
        view_split(-1)


def test_views_are_answered_only_where_the_backend_serves_them_and_never_budgeted():
    from craft.blackbox import view_split

    class NoViews(LinearBackend):
        def info(self):
            return dataclasses.replace(super().info(), train_views=False)

    ctx = torch.zeros(1, 4, 8)
    with pytest.raises(ValueError, match="augmented view of the training images, which this black box does not serve"):
        MeteredBlackBox(NoViews(), 10).logits(ctx, view_split(3), budgeted=False)
    box = MeteredBlackBox(LinearBackend(), 10)
    with pytest.raises(ValueError, match="budgeted queries score training images only"):
        box.logits(ctx, view_split(3))
    fresh, raw = box.logits(ctx, view_split(3), budgeted=False), box.logits(ctx, view_split(3, raw=True), budgeted=False)
    assert not torch.equal(fresh, box.logits(ctx, "train", budgeted=False))
    assert box.usage.queries == 0 and box.usage.unbudgeted_queries == 3
    assert raw.shape == fresh.shape


@pytest.mark.parametrize("backend_cls", [LinearBackend, ManyBackend])
def test_logits_many_takes_one_image_set_per_query(backend_cls):
    from craft.blackbox import view_split

    ctx = torch.randn(3, 4, 8)
    box = MeteredBlackBox(backend_cls(), 10)
    splits = [view_split(2, raw=True), "train"]
    got = box.logits_many([(ctx[:1], False), (ctx[1:], True)], splits)
    alone = MeteredBlackBox(LinearBackend(), 10)
    assert torch.equal(got[0], alone.logits(ctx[:1], splits[0], budgeted=False))
    assert torch.equal(got[1], alone.logits(ctx[1:], "train"))
    assert box.usage.queries == 2 and box.usage.unbudgeted_queries == 1
    with pytest.raises(ValueError, match="2 queries but 1 image sets"):
        box.logits_many([(ctx[:1], False), (ctx[1:], True)], ["train"])
