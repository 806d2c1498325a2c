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
