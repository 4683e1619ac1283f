import pytest
import torch
import torch.nn.functional as F

from vampdiffusion.models.moe import (
    ExpertFFNs, balance_loss, experts_bmm, experts_grouped_mm, experts_loop, experts_segments, quality_routing,
    specialisation_loss, style_routing,
)


def _ffn(E=8, d=16, hidden=32, seed=0):
    torch.manual_seed(seed)
    ffn = ExpertFFNs(E, d, hidden)
    ffn.reset_parameters()
    with torch.no_grad():
        ffn.b1.normal_()
        ffn.b2.normal_()
    return ffn


def _run_with_grads(runner, ffn, x, experts, gates, upstream):
    ffn.zero_grad()
    x = x.clone().requires_grad_(True)
    gates = gates.clone().requires_grad_(True)
    out = runner(ffn, x, experts, gates)
    out.backward(upstream)
    return out.detach(), x.grad, gates.grad, {n: p.grad.clone() for n, p in ffn.named_parameters()}


# expert 0 and experts 5..7 receive no image; expert 3 receives two slots
ROUTINGS = [
    torch.tensor([[3, 1], [3, 2], [4, 1]]),
    torch.tensor([[7, 0], [0, 7], [7, 0], [0, 7]]),   # only two experts used
    torch.tensor([[2], [2], [2]]),                    # top-1, a single expert for the whole batch
]


@pytest.mark.parametrize("runner", [experts_grouped_mm, experts_bmm, experts_segments],
                         ids=["grouped_mm", "bmm", "segments"])
@pytest.mark.parametrize("experts", ROUTINGS)
def test_grouped_dispatch_equals_reference_loop(runner, experts):
    ffn = _ffn()
    B, k = experts.shape
    torch.manual_seed(1)
    x = torch.randn(B, 5, 16)
    gates = torch.rand(B, k)
    upstream = torch.randn(B, 5, 16)
    ref = _run_with_grads(experts_loop, ffn, x, experts, gates, upstream)
    got = _run_with_grads(runner, ffn, x, experts, gates, upstream)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], ref[2], rtol=1e-5, atol=1e-5)
    for name in ref[3]:
        torch.testing.assert_close(got[3][name], ref[3][name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("runner", [experts_grouped_mm, experts_bmm, experts_segments],
                         ids=["grouped_mm", "bmm", "segments"])
def test_unused_experts_get_exactly_zero_gradient(runner):
    ffn = _ffn()
    experts = torch.tensor([[3, 1], [3, 2]])
    runner(ffn, torch.randn(2, 4, 16), experts, torch.full((2, 2), 0.5)).square().sum().backward()
    unused = [0, 4, 5, 6, 7]
    assert ffn.w1.grad[unused].abs().max().item() == 0.0
    assert ffn.w2.grad[unused].abs().max().item() == 0.0
    assert ffn.b1.grad.view(8, -1)[unused].abs().max().item() == 0.0
    assert ffn.w1.grad[[1, 2, 3]].abs().min(dim=-1).values.max().item() > 0.0


def test_grouped_mm_bf16_matches_loop():
    ffn = _ffn().to(torch.bfloat16)
    experts = torch.tensor([[3, 1], [3, 2], [4, 1]])
    x = torch.randn(3, 8, 16, dtype=torch.bfloat16)
    gates = torch.rand(3, 2).to(torch.bfloat16)
    ffn32 = _ffn()
    ref = experts_loop(ffn32, x.float(), experts, gates.float())
    got = experts_grouped_mm(ffn, x, experts, gates).float()
    assert (got - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_style_routing_two_distinct_experts_gates_sum_to_one():
    logits = torch.randn(64, 8)
    p, experts, gates = style_routing(logits, top_k=2)
    assert experts.shape == (64, 2) and (experts[:, 0] != experts[:, 1]).all()
    torch.testing.assert_close(gates.sum(dim=1), torch.ones(64))
    # the chosen experts are the two largest probabilities, best first
    torch.testing.assert_close(experts, p.topk(2, dim=1).indices)
    torch.testing.assert_close(gates[:, 0], p.max(dim=1).values / p.topk(2, dim=1).values.sum(dim=1))


def test_style_override_forces_one_expert_with_gate_one():
    logits = torch.randn(4, 8)
    _, experts, gates = style_routing(logits, top_k=2, style_override=torch.tensor([5, -1, 0, 7]))
    assert experts[:, 0].tolist()[0] == 5 and experts[2, 0].item() == 0 and experts[3, 0].item() == 7
    assert gates[[0, 2, 3]].tolist() == [[1.0, 0.0]] * 3
    assert (experts[:, 0] != experts[:, 1]).all()
    _, free_experts, free_gates = style_routing(logits, top_k=2)
    assert experts[1].tolist() == free_experts[1].tolist() and gates[1].tolist() == free_gates[1].tolist()


def test_quality_routing_one_expert_gate_one_and_router_gets_gradient():
    router = torch.nn.Linear(8, 4)
    e_q = torch.randn(6, 8)
    p, expert, g = quality_routing(router(e_q))
    assert expert.shape == (6, 1)
    torch.testing.assert_close(expert[:, 0], p.argmax(dim=1))
    assert torch.equal(g, torch.ones(6, 1))
    ffn = _ffn(E=4, d=16)
    x = torch.randn(6, 3, 16)
    experts_bmm(ffn, x, expert, g).square().sum().backward()
    assert router.weight.grad.abs().sum().item() > 1e-6


def test_balance_loss_is_one_at_uniform_routing():
    probs = torch.full((1, 4, 8), 1 / 8)
    experts = torch.arange(8).view(1, 4, 2)  # each expert gets exactly one of the 8 slots
    assert balance_loss(probs, experts).item() == pytest.approx(1.0, abs=1e-6)


def test_balance_loss_grows_when_routing_collapses():
    probs = torch.full((1, 4, 8), 0.01)
    probs[..., 0] = 0.5
    probs[..., 1] = 0.44
    experts = torch.tensor([[0, 1]] * 4).view(1, 4, 2)
    # f = (0.5, 0.5, 0, …), P = (0.5, 0.44, …): L = 8 (0.25 + 0.22) = 3.76
    assert balance_loss(probs, experts).item() == pytest.approx(3.76, abs=1e-5)


def test_balance_loss_averages_blocks_and_differentiates_P_only():
    logits = torch.randn(3, 5, 4, requires_grad=True)
    probs = logits.softmax(-1)
    experts = probs.argmax(-1, keepdim=True)
    loss = balance_loss(probs, experts)
    f = F.one_hot(experts[..., 0], 4).float().mean(1)
    expected = (4 * (f * probs.mean(1)).sum(-1)).mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad.abs().sum().item() > 0


def test_specialisation_loss_equals_cross_entropy_over_labeled_images():
    logits = torch.randn(2, 6, 8)
    labels = torch.tensor([3, -1, 0, 7, -1, 3])
    keep = labels >= 0
    expected = torch.stack([F.cross_entropy(logits[i][keep], labels[keep]) for i in range(2)]).mean()
    torch.testing.assert_close(specialisation_loss(logits, labels), expected)


def test_specialisation_loss_is_zero_without_labeled_images():
    logits = torch.randn(2, 3, 8, requires_grad=True)
    loss = specialisation_loss(logits, torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum().item() == 0.0


def test_quality_specialisation_loss_equals_cross_entropy():
    logits = torch.randn(7, 5, 4)
    tiers = torch.tensor([0, 1, 2, 3, 3])
    expected = torch.stack([F.cross_entropy(logits[i], tiers) for i in range(7)]).mean()
    torch.testing.assert_close(specialisation_loss(logits, tiers), expected)


def test_grouped_dispatch_uses_grouped_mm_for_bf16_and_bmm_otherwise():
    from vampdiffusion.models.moe import grouped_mm_supported
    cpu = torch.device("cpu")
    assert grouped_mm_supported(cpu, torch.bfloat16) is hasattr(torch, "_grouped_mm")
    assert grouped_mm_supported(cpu, torch.float32) is False  # the fp32 path takes the bmm fallback
