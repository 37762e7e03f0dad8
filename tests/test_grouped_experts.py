"""Grouped expert banks equal a straightforward per-expert reference (same weights)."""

import pytest
import torch
import torch.nn.functional as F
from mssbench_aesm.model import ExpertBank
from mssbench_supermoe.model import MoEFFN

torch.set_num_threads(1)


def per_expert_bank(bank: ExpertBank, x: torch.Tensor) -> torch.Tensor:
    """ExpertBank written out expert by expert: ``FC -> BN -> act`` per expert, in order."""
    ys = [x] * bank.n_experts
    for weight, norm in zip(bank.weights, bank.norms):
        pre = [y @ weight[e] for e, y in enumerate(ys)]  # each [B, h]
        h = weight.shape[2]
        normed = norm(torch.cat(pre, dim=1))  # BN keeps one statistic per (expert, unit)
        ys = [bank.act(normed[:, e * h : (e + 1) * h]) for e in range(bank.n_experts)]
    return torch.stack(ys, dim=1)


def bank(seed=0, hidden=(16, 8)):
    torch.manual_seed(seed)
    return ExpertBank(5, 12, list(hidden), "relu", 0.0, 0.1)


@pytest.mark.parametrize("hidden", [(16,), (16, 8), (4, 6, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_expert_bank_equals_per_expert_reference(hidden, training):
    grouped, ref = bank(hidden=hidden), bank(hidden=hidden)
    grouped.train(training), ref.train(training)
    x = torch.randn(64, 12, requires_grad=True)
    y = grouped(x)
    y_ref = per_expert_bank(ref, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    (y.square().sum()).backward()
    (y_ref.square().sum()).backward()
    for a, b in zip(grouped.parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    for a, b in zip(grouped.buffers(), ref.buffers()):
        torch.testing.assert_close(a, b)  # running statistics move alike


def test_the_bank_reference_catches_a_wrong_expert_order():
    """A grouped bank whose experts' weights are mixed up fails the comparison."""
    grouped, ref = bank(), bank()
    with torch.no_grad():
        w = grouped.weights[0]
        w.copy_(w.flip(0))  # expert e gets expert n-1-e's first layer
    x = torch.randn(64, 12)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(grouped(x), per_expert_bank(ref, x), rtol=1e-5, atol=1e-6)


def moe(seed=0, n_experts=5, top_k=2, noise_std=0.0):
    torch.manual_seed(seed)
    return MoEFFN(8, [16], n_experts, top_k, noise_std)


def per_expert_moe(layer: MoEFFN, x: torch.Tensor) -> torch.Tensor:
    """Each token's top-k experts run one by one on that token, weighted and summed."""
    route = layer.route(x)
    rows = []
    for n in range(x.shape[0]):
        out = 0
        for slot in range(layer.top_k):
            e = int(route.experts[n, slot])
            first, last = layer.fcs[0], layer.fcs[-1]
            h = F.gelu(x[n] @ first.weight[e] + first.bias[e])
            out = out + route.weights[n, slot] * (h @ last.weight[e] + last.bias[e])
        rows.append(out)
    return torch.stack(rows)


@pytest.mark.parametrize("dispatch", ["grouped", "loop"])
@pytest.mark.parametrize("top_k", [1, 2, 5])
def test_moe_dispatch_equals_per_token_reference(dispatch, top_k):
    layer = moe(top_k=top_k).eval()
    layer.dispatch = dispatch
    x = torch.randn(40, 8, requires_grad=True)
    y, balance = layer(x)
    torch.testing.assert_close(y, per_expert_moe(layer, x), rtol=1e-5, atol=1e-6)
    assert balance.shape == ()


def test_grouped_and_loop_dispatch_train_alike_with_router_noise():
    """Outputs, balance loss and every gradient agree (the same noise drawn in training)."""
    grads, outs = [], []
    for dispatch in ("grouped", "loop"):
        layer = moe(noise_std=0.5).train()
        layer.dispatch = dispatch
        torch.manual_seed(3)
        x = torch.randn(2, 30, 8)
        y, balance = layer(x)
        (y.square().sum() + balance).backward()
        outs.append((y.detach(), balance.detach()))
        grads.append([p.grad.clone() for p in layer.parameters()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_moe_reference_catches_unrenormalised_weights(monkeypatch):
    """A grouped dispatch mixing with the raw top-k probabilities fails the comparison."""
    layer = moe(top_k=2).eval()
    layer.dispatch = "grouped"
    x = torch.randn(40, 8)
    expected = per_expert_moe(layer, x)
    real = MoEFFN.route

    def raw(self, x):
        route = real(self, x)
        return route._replace(weights=route.probs.gather(1, route.experts))

    monkeypatch.setattr(MoEFFN, "route", raw)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(layer(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_auto_dispatch_loops_on_the_cpu():
    layer = moe()
    calls = []
    layer.forward_loop = lambda x: calls.append("loop") or (x, x.sum())
    layer(torch.randn(4, 8))
    assert calls == ["loop"] and layer.dispatch == "auto"
