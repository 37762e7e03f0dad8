"""AdaSparse: weighting factors, truncation, the alpha schedule and the base network."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_adasparse import DEFAULTS, mssbench_register_models
from mssbench_adasparse.model import AdaSparse, weighting_factors

from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
SMALL = {"embed_dim": 4, "hidden": [12, 6], "dropout": 0.0}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return AdaSparse(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=40, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def base_network(model, b):
    """e_d ⊕ E into one ReLU network per task, no weighting factors."""
    domain = model.domain_embedding(b.scenario)
    h = torch.cat([domain, model.encoder(b)], dim=1)
    h = h.unsqueeze(1).expand(-1, T, -1)
    for layer in model.layers:
        h = torch.relu(torch.einsum("bti,tio->bto", h, layer.weight) + layer.bias)
    return (torch.einsum("bti,tio->bto", h, model.head.weight) + model.head.bias).squeeze(-1)


def test_spec():
    [spec] = mssbench_register_models()
    assert spec.name == "adasparse" and spec.version == 2
    assert spec.defaults["form"] == "fusion" and spec.defaults["beta"] == 2.0
    assert "no sparsity regulariser" in spec.summary


@settings(max_examples=60, deadline=None)
@given(
    z=st.floats(-30, 30),
    form=st.sampled_from(["scaling", "fusion"]),
    alpha=st.floats(0.5, 20),
    epsilon=st.floats(0.0, 1.0),
)
def test_factors_are_zero_or_between_epsilon_and_beta(z, form, alpha, epsilon):
    pi = weighting_factors(torch.tensor([z]), form, alpha, 2.0, epsilon).item()
    assert pi == 0.0 or epsilon <= pi <= 2.0
    raw = 2.0 * torch.sigmoid(torch.tensor(z if form == "scaling" else alpha * z)).item()
    if abs(raw - epsilon) > 1e-5:  # float32 rounding decides exactly at the threshold
        assert pi == pytest.approx(raw if raw >= epsilon else 0.0, rel=1e-5, abs=1e-7)


def test_zero_pruners_give_the_base_network():
    """z = 0: every factor is beta * sigmoid(0) = 1, so the model is its backbone."""
    model = build()
    b = batch()
    with torch.no_grad():
        before = model(b).logits
        for pruner in model.pruners:
            pruner.weight.zero_()
        after = model(b).logits
        reference = base_network(model, b)
    assert (before - reference).abs().max() > 1e-4
    assert (after - reference).abs().max() < 1e-5


def test_truncated_neurons_carry_nothing_and_their_factors_get_no_gradient():
    model = build(epsilon=0.9).train()
    b = batch()
    domain = model.domain_embedding(b.scenario)
    h = torch.randn(len(b), T, SMALL["hidden"][0])
    z = model.pruners[1](domain, h).detach().requires_grad_(True)
    pi = weighting_factors(z, model.form, model.alpha, model.beta, model.epsilon)
    assert torch.equal(pi, model.factors(1, domain, h))
    pruned = pi == 0
    assert pruned.any() and (~pruned).any()
    assert not (h * pi)[pruned].any()
    pi.sum().backward()
    assert not z.grad[pruned].any()
    assert z.grad[~pruned].abs().min() > 0


def test_alpha_grows_with_training_steps_only():
    model = build(delta_alpha=0.5)
    b = batch()
    with torch.no_grad():
        model.eval()
        first = model(b).logits
        assert float(model.alpha) == 1.0
        assert torch.equal(model(b).logits, first)  # evaluation leaves alpha alone
        model.train()
        model(b)
        model(b)
    assert float(model.alpha) == 2.0
    assert int(model.state_dict()["steps"]) == 2
    copy = build(delta_alpha=0.5)
    copy.load_state_dict(model.state_dict())
    assert float(copy.alpha) == 2.0


def test_factors_depend_on_the_scenario():
    model = build()
    b = batch()
    other = Batch(b.categorical, b.numeric, (b.scenario + 1) % S, b.labels)
    with torch.no_grad():
        assert (model(b).logits - model(other).logits).abs().max() > 1e-4


def test_trains_pruners_and_backbone():
    model = build().train()
    b = batch()
    logits, aux = model(b)
    (F.binary_cross_entropy_with_logits(logits, b.labels) + aux).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="form"):
        build(form="binarization")
    with pytest.raises(ValueError, match="epsilon"):
        build(epsilon=3.0)
    with pytest.raises(ValueError, match="alpha0"):
        build(alpha0=0.0)
    with pytest.raises(TypeError):
        build(not_a_param=1)
