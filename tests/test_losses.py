"""The prompt fitness against its definition: CE plus lambda_I times KL(refined || logits), per candidate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from craft.losses import prompt_fitness
from craft.refine import RefinementMLP


def _by_definition(logits: torch.Tensor, labels: torch.Tensor, lambda_i: float, head) -> torch.Tensor:
    out = []
    for cand in logits:
        log_p, log_r = F.log_softmax(cand.double(), -1), F.log_softmax(head(cand).double(), -1)
        ce = F.nll_loss(log_p, labels)
        kl = F.kl_div(log_p, log_r, log_target=True, reduction="batchmean")  # KL(refined || logits)
        out.append(ce + lambda_i * kl)
    return torch.stack(out).float()


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("lambda_i", [0.0, 0.1, 2.0])
def test_fitness_is_cross_entropy_plus_weighted_kl_of_the_refined_to_the_raw_predictions(lambda_i, batched):
    torch.manual_seed(0)
    logits, labels = 4 * torch.randn(5, 30, 7), torch.randint(0, 7, (30,))
    head = RefinementMLP(7, 16)
    with torch.no_grad():
        for p in head.parameters():  # a head far from the identity, so that the KL term is large
            p.mul_(5)
        ours = prompt_fitness(logits, labels, lambda_i, head, batched=batched)
        expected = _by_definition(logits, labels, lambda_i, head)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    if lambda_i:
        assert (ours - _by_definition(logits, labels, 0.0, head)).abs().min() > 1e-3  # the KL term counts
    assert torch.equal(prompt_fitness(logits, labels, lambda_i, None), prompt_fitness(logits, labels, 0.0, head))


def test_batched_fitness_goes_in_chunks_of_candidates_and_agrees_with_one_at_a_time(monkeypatch):
    import craft.losses as losses

    torch.manual_seed(1)
    logits, labels = 3 * torch.randn(7, 20, 6), torch.randint(0, 6, (20,))
    head = RefinementMLP(6, 8)
    seen: list[int] = []
    monkeypatch.setattr(losses, "FITNESS_CHUNK_LOGITS", 3 * 20 * 6)  # 3 candidates a chunk: 3 + 3 + 1
    with torch.no_grad():
        batched = prompt_fitness(logits, labels, 0.5, lambda x: (seen.append(x.shape[0]), head(x))[1], batched=True)
        one_by_one = prompt_fitness(logits, labels, 0.5, head, batched=False)
    assert seen == [3, 3, 1]
    torch.testing.assert_close(batched, one_by_one, rtol=1e-6, atol=1e-6)


def test_the_refinement_optimizer_is_torchs_default_adam_on_a_cpu():
    from craft.refine import refinement_optimizer

    opt = refinement_optimizer(RefinementMLP(10, 16), 0.01)
    assert isinstance(opt, torch.optim.Adam) and not opt.defaults["fused"] and opt.defaults["lr"] == 0.01


def test_off_the_cpu_the_fitness_dispatches_as_many_operations_for_40_candidates_as_for_2():
    from measurement.generation_ops import count_ops

    meta = torch.device("meta")  # not a CPU: batched by default; nothing computed
    labels, head = torch.zeros(160, dtype=torch.long, device=meta), RefinementMLP(10, 16).to(meta)
    with torch.no_grad():
        ops = {n: count_ops(lambda n=n: prompt_fitness(torch.empty(n, 160, 10, device=meta), labels, 0.1, head))
               for n in (2, 40)}
        one_by_one = count_ops(lambda: prompt_fitness(torch.empty(40, 160, 10, device=meta), labels, 0.1, head, batched=False))
    assert ops[2] == ops[40] and one_by_one > 10 * ops[40]


def test_on_a_cpu_the_fitness_goes_in_cache_sized_chunks_of_candidates_and_agrees_with_one_at_a_time():
    from craft.losses import FITNESS_CPU_CHUNK_LOGITS

    torch.manual_seed(2)
    logits, labels = 3 * torch.randn(40, 160, 10), torch.randint(0, 10, (160,))
    head = RefinementMLP(10, 256)
    seen: list[int] = []
    with torch.no_grad():
        chunked = prompt_fitness(logits, labels, 1.0, lambda x: (seen.append(x.shape[0]), head(x))[1])
        one_by_one = prompt_fitness(logits, labels, 1.0, head, batched=False)
    per = FITNESS_CPU_CHUNK_LOGITS // (160 * 10)
    assert per == 5 and seen == [per] * 8  # the built-in suite's 16 shots: 5 candidates an operation
    torch.testing.assert_close(chunked, one_by_one, rtol=1e-6, atol=1e-6)
    seen.clear()
    with torch.no_grad():
        prompt_fitness(3 * torch.randn(3, 1600, 100), torch.zeros(1600, dtype=torch.long), 1.0,
                       lambda x: (seen.append(x.shape[0]), x)[1])
    assert seen == [1, 1, 1]  # larger than a chunk: one candidate at a time
