"""The black-box contract: exact counting and a budget that is never exceeded."""

from __future__ import annotations

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
        out = [LinearBackend.logits(self, c, split)[0] for c in contexts]
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
