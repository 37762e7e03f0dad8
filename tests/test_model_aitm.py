"""AITM: information transfer along the task chain and the behavioural calibrator."""

import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_aitm import DEFAULTS, mssbench_register_models
from mssbench_aitm.model import AITM, AITAttention, calibrator_loss

from mssbench.api import check_head_supported
from mssbench.cli import main
from mssbench.errors import ConfigError
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # tasks ctr, ctcvr; ctcvr implies ctr
SMALL = {"embed_dim": 4, "tower_hidden": [12, 6], "dropout": [0.0, 0.0]}


def build(schema=SCHEMA, seed=0, **overrides):
    torch.manual_seed(seed)
    return AITM(schema, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(schema=SCHEMA, n=32, seed=1):
    return make_split(schema, n, seed=seed).batch(slice(0, n))


def test_defaults_are_the_official_configuration():
    [spec] = mssbench_register_models()
    assert spec.name == "aitm"
    assert spec.defaults == {
        "embed_dim": 5,
        "tower_hidden": [128, 64, 32],
        "dropout": [0.1, 0.3, 0.3],
        "calibrator_weight": 0.6,
    }
    assert spec.tags["heads"] == ["direct"]


def test_calibrator_is_zero_when_ctcvr_at_most_ctr():
    ctr = torch.tensor([2.0, 0.0, -1.0, -3.0])
    logits = torch.stack([ctr, ctr - torch.tensor([0.0, 0.5, 3.0, 1.0])], dim=1)
    assert calibrator_loss(logits, [(1, 0)], 0.6).item() == 0.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-8, 8), st.floats(-8, 8)), min_size=1, max_size=20))
def test_calibrator_is_alpha_times_mean_positive_gap(rows):
    logits = torch.tensor(rows, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = 0.6 * torch.clamp(p[:, 1] - p[:, 0], min=0).mean()
    got = calibrator_loss(logits, [(1, 0)], 0.6)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    assert got.item() >= 0.0


def test_model_aux_loss_is_the_calibrator_of_its_own_logits():
    model = build(calibrator_weight=2.5)
    out = model(batch())
    assert out.aux_loss.item() == pytest.approx(
        calibrator_loss(out.logits, [(1, 0)], 2.5).item(), rel=1e-6
    )
    # Push CTCVR above CTR: the calibrator must then be positive.
    with torch.no_grad():
        model.heads.bias[1] += 20.0
    assert model(batch()).aux_loss.item() > 0.0


def test_calibrator_gradient_lowers_ctcvr_and_raises_ctr():
    logits = torch.tensor([[-1.0, 1.0]], requires_grad=True)
    calibrator_loss(logits, [(1, 0)], 0.6).backward()
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]


def test_no_calibrator_without_a_relation():
    schema = make_schema(tasks=("income", "never_married"), implies=False)
    model = build(schema)
    with torch.no_grad():
        model.heads.bias[1] += 20.0  # second task far above the first
    assert model(batch(schema)).aux_loss.item() == 0.0


def test_first_task_ignores_later_towers_and_later_task_reads_earlier_one():
    model, b = build(), batch()
    with torch.no_grad():
        before = model(b).logits
        # Change the CTCVR tower only: the CTR logit must not move.
        for layer in model.tower_layers:
            layer.weight[1] += torch.randn_like(layer.weight[1])
        after = model(b).logits
    assert torch.equal(before[:, 0], after[:, 0])
    model = build()
    with torch.no_grad():
        before = model(b).logits
        # Change the CTR tower only: information transfer must move the CTCVR logit.
        model.tower_layers[-1].weight[0] += torch.randn_like(model.tower_layers[-1].weight[0])
        after = model(b).logits
    assert not torch.allclose(before[:, 1], after[:, 1])


def test_transfer_gradient_reaches_the_earlier_tower():
    model, b = build().train(), batch()
    model(b).logits[:, 1].sum().backward()
    assert model.tower_layers[0].weight.grad[0].abs().sum() > 0  # CTR tower, via p_0
    assert model.info.weight.grad.abs().sum() > 0


def test_attention_weights_sum_to_one_and_fuse_the_two_inputs():
    torch.manual_seed(0)
    att = AITAttention(6)
    p, q = torch.randn(5, 1, 6), torch.randn(5, 1, 6)
    w = att.weights(torch.stack([p, q], dim=2))
    assert torch.allclose(w.sum(-1), torch.ones(5, 1))
    expected = w[..., :1] * att.value(p) + w[..., 1:] * att.value(q)
    assert torch.allclose(att(p, q), expected, atol=1e-6)


def test_three_task_chain_transfers_step_by_step():
    schema = make_schema(tasks=("a", "b", "c"), implies=False)
    model, b = build(schema), batch(schema)
    assert model.info.n_groups == 2
    with torch.no_grad():
        before = model(b).logits
        model.tower_layers[-1].weight[1] += torch.randn_like(model.tower_layers[-1].weight[1])
        after = model(b).logits
    assert torch.equal(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, 2], after[:, 2])  # c reads b's fused representation


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dropout": [0.1]}, "one entry per tower layer"),
        ({"tower_hidden": []}, "tower_hidden"),
        ({"calibrator_weight": -1.0}, "calibrator_weight"),
        ({"dropout": [0.1, 1.0]}, r"\[0, 1\)"),
    ],
)
def test_bad_hyper_parameters_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


def test_esmm_head_is_refused_with_a_clear_error():
    [spec] = mssbench_register_models()
    check_head_supported(spec, "direct", SCHEMA, "tiny-synth")
    with pytest.raises(ConfigError, match="supports only --head direct, not 'esmm'"):
        check_head_supported(spec, "esmm", SCHEMA, "tiny-synth")


def test_cli_smoke_run_trains_with_direct_heads(tmp_path):
    small = [f"{k}={json.dumps(v)}" for k, v in SMALL.items()]
    args = ["run", "--plugin", "mssbench.testing.plugin", "-m", "aitm", "-d", "tiny-synth"]
    args += [x for kv in small for x in ("-p", kv)]
    args += ["-D", "n_train=600", "--epochs", "1", "--batch-size", "128", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    [record] = tmp_path.glob("*.json")
    assert json.loads(record.read_text())["config"]["head"] == "direct"
    res = CliRunner().invoke(main, [*args, "--head", "esmm", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "supports only --head direct" in res.output
    assert "Traceback" not in res.output
