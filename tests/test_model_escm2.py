"""ESCM²: inverse-propensity weights, IPS and DR risks, the loss wiring."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_escm2 import DEFAULTS, mssbench_register_models
from mssbench_escm2.model import ESCM2, counterfactual_risk, inverse_propensity

from mssbench.api import build_model, check_head_supported
from mssbench.cli import main
from mssbench.errors import ConfigError
from mssbench.nn import ESMMHead
from mssbench.runners.trainer import task_weights, training_loss
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # tasks ctr, ctcvr; ctcvr implies ctr
SMALL = {"embed_dim": 4, "n_experts": 3, "expert_hidden": [12], "tower_hidden": [6]}


def build(seed=0, schema=SCHEMA, **overrides):
    torch.manual_seed(seed)
    return ESCM2(schema, **{**DEFAULTS, **SMALL, **overrides})


def batch(n=64, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def test_defaults_are_the_official_configuration():
    [spec] = mssbench_register_models()
    assert spec.defaults == {
        "embed_dim": 12,
        "n_experts": 8,
        "expert_hidden": [16],
        "tower_hidden": [8],
        "counterfactual": "dr",
        "counterfactual_weight": 0.5,
        "global_weight": 0.5,
        "max_weight": 15.0,
    }
    assert spec.tags["head"] == "esmm" and spec.tags["heads"] == ["esmm"]


def test_ips_weights_are_one_over_propensity_on_clicked_rows_and_zero_elsewhere():
    ctr_logit = torch.tensor([0.0, 2.0, -1.0, 0.5, -4.0])
    click = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0])
    w = inverse_propensity(ctr_logit, click, max_weight=15.0)
    p = torch.sigmoid(ctr_logit)
    assert torch.allclose(w[:3], 1 / p[:3])
    assert w[3] == 0.0
    assert w[4] == pytest.approx(15.0)  # p = 0.018 < 1/15: clipped


def test_ips_weights_send_no_gradient_to_the_ctr_logit():
    ctr_logit = torch.tensor([0.3, -0.2], requires_grad=True)
    cvr_logit = torch.tensor([0.1, 0.4], requires_grad=True)
    one = torch.ones(2)
    counterfactual_risk(ctr_logit, cvr_logit, None, one, one, 15.0).backward()
    assert ctr_logit.grad is None or torch.equal(ctr_logit.grad, torch.zeros(2))
    assert cvr_logit.grad.abs().sum() > 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-3, 3), st.floats(-5, 5), st.booleans(), st.booleans()),
        min_size=1,
        max_size=30,
    )
)
def test_ips_risk_is_the_inverse_propensity_weighted_mean_error(rows):
    a = torch.tensor([r[0] for r in rows])
    b = torch.tensor([r[1] for r in rows])
    click = torch.tensor([float(r[2]) for r in rows])
    buy = torch.tensor([float(r[2] and r[3]) for r in rows])
    error = F.binary_cross_entropy_with_logits(b, buy, reduction="none")
    expected = (click * error / torch.sigmoid(a).clamp_min(1 / 15)).mean()
    got = counterfactual_risk(a, b, None, click, buy, 15.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-7)


def test_unclicked_rows_only_count_through_the_imputation():
    a, b = torch.randn(8), torch.randn(8)
    click = torch.tensor([1.0, 0, 1, 0, 0, 1, 0, 0])
    buy = torch.zeros(8)
    imputed = torch.rand(8)
    other = buy.clone()
    other[click == 0] = 1.0  # labels of unclicked rows are never observed: they must not count
    for imp in (None, imputed):
        assert torch.equal(
            counterfactual_risk(a, b, imp, click, buy, 15.0),
            counterfactual_risk(a, b, imp, click, other, 15.0),
        )


def test_dr_with_exact_imputation_is_the_mean_imputed_error():
    a, b = torch.randn(10), torch.randn(10)
    click = (torch.rand(10) > 0.4).float()
    buy = click * (torch.rand(10) > 0.5).float()
    error = F.binary_cross_entropy_with_logits(b, buy, reduction="none")
    imputed = torch.where(click > 0, error, torch.rand(10))
    got = counterfactual_risk(a, b, imputed, click, buy, 15.0)
    assert got.item() == pytest.approx(imputed.mean().item(), rel=1e-6)


def test_dr_with_zero_imputation_is_ips_plus_the_weighted_squared_error():
    a, b = torch.randn(10), torch.randn(10)
    click = (torch.rand(10) > 0.4).float()
    buy = click * (torch.rand(10) > 0.5).float()
    error = F.binary_cross_entropy_with_logits(b, buy, reduction="none")
    w = inverse_propensity(a, click, 15.0)
    got = counterfactual_risk(a, b, torch.zeros(10), click, buy, 15.0)
    expected = (w * error).mean() + (w * error**2).mean()
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("mode", ["ips", "dr"])
def test_model_aux_loss_is_the_weighted_risk_of_its_tower_logits(mode):
    model, b = build(counterfactual=mode, counterfactual_weight=0.7).train(), batch()
    out = model(b)
    assert callable(out.aux_loss)
    x = model.encoder(b)
    gates = torch.softmax(model.gates(x).view(-1, model.n_towers, model.E), -1)
    towers = model.towers(torch.einsum("bge,beh->bgh", gates, model.experts(x))).squeeze(-1)
    imputed = F.softplus(towers[:, 2]) if mode == "dr" else None
    expected = 0.7 * counterfactual_risk(
        towers[:, 0], towers[:, 1], imputed, b.labels[:, 0], b.labels[:, 1], 15.0
    )
    assert out.aux_loss(b.labels).item() == pytest.approx(expected.item(), rel=1e-5)
    assert model.n_towers == (3 if mode == "dr" else 2)


def test_training_loss_is_ctr_plus_weighted_ctcvr_plus_risk(registry):
    params = {**SMALL, "global_weight": 0.25, "counterfactual": "ips"}
    torch.manual_seed(0)
    model = ESMMHead(build_model(registry, "escm2", SCHEMA, params).train(), SCHEMA)
    b = batch()
    torch.manual_seed(5)
    out = model(b)
    weights = task_weights(model, 2, torch.device("cpu"))
    assert weights.tolist() == [1.0, 0.25]
    loss = training_loss(out.logits, out.aux_loss, b.labels, weights)
    bce = [F.binary_cross_entropy_with_logits(out.logits[:, t], b.labels[:, t]) for t in (0, 1)]
    expected = bce[0] + 0.25 * bce[1] + out.aux_loss(b.labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_needs_a_click_conversion_relation():
    schema = make_schema(tasks=("income", "never_married"), implies=False)
    with pytest.raises(ValueError, match="needs a conversion task that implies a click task"):
        build(schema=schema)
    [spec] = mssbench_register_models()
    with pytest.raises(ConfigError, match="supports only --head esmm, not 'direct': dataset"):
        check_head_supported(spec, "direct", schema, "census-income")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"counterfactual": "snips"}, "counterfactual must be 'ips' or 'dr'"),
        ({"max_weight": 0.5}, "max_weight"),
        ({"global_weight": -1.0}, "global_weight"),
    ],
)
def test_bad_hyper_parameters_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_cli_smoke_run_uses_the_esmm_head(tmp_path):
    small = [f"{k}={json.dumps(v)}" for k, v in SMALL.items()]
    args = ["run", "--plugin", "mssbench.testing.plugin", "-m", "escm2", "-d", "tiny-synth"]
    args += [x for kv in small for x in ("-p", kv)]
    args += ["-D", "n_train=600", "--epochs", "1", "--batch-size", "128", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    [record] = tmp_path.glob("*.json")
    assert json.loads(record.read_text())["config"]["head"] == "esmm"
