"""Cross-stitch: units, their initialisation and the alpha learning-rate multiplier (§9)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from mssbench_cross_stitch import DEFAULTS, mssbench_register_models
from mssbench_cross_stitch.model import CrossStitch

from mssbench.testing import make_schema, run_checks
from mssbench.testing.checks import ALL_CHECKS
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
QUICK_CHECKS = [c for c in ALL_CHECKS if c.__name__ != "check_learns"]
SMALL = {
    "embed_dim": 4,
    "input_width": 12,
    "column_hidden": [10, 6],
    "tower_hidden": [5],
    "dropout": 0.0,
}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return CrossStitch(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=32, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def logits(model, b):
    with torch.no_grad():
        return model(b).logits


def perturb_column(model, column):
    """Add noise to every weight of one column: its layers and its tower."""
    with torch.no_grad():
        for mlp in [*model.layers, model.towers]:
            for linear in [*mlp.linears, mlp.head]:
                if linear is not None:
                    linear.weight[column] += torch.randn_like(linear.weight[column])
                    linear.bias[column] += torch.randn_like(linear.bias[column])


def set_identity(model):
    with torch.no_grad():
        for stitch in model.stitches:
            eye = torch.eye(model.C).view(model.C, model.C, *([1] * (stitch.alpha_raw.dim() - 2)))
            stitch.alpha_raw.copy_(eye.expand_as(stitch.alpha_raw) / stitch.lr_scale)


def test_defaults():
    [spec] = mssbench_register_models()
    assert spec.name == "cross_stitch"
    d = spec.defaults
    assert (d["input_width"], d["column_hidden"], d["tower_hidden"]) == (256, [256, 128], [64])
    assert (d["alpha_self"], d["alpha_lr_scale"], d["scenario_towers"]) == (0.9, 100.0, False)
    assert d["alpha_per_unit"] is False
    model = spec.build(SCHEMA, **d)
    assert len(model.stitches) == 2  # one unit after each hidden layer of the columns
    assert model.stitches[0].alpha.shape == (SCHEMA.n_tasks, SCHEMA.n_tasks)


@pytest.mark.parametrize(
    "overrides, n_columns",
    [({}, 2), ({"scenario_towers": True}, 6), ({"alpha_per_unit": True}, 2)],
)
def test_alpha_init(overrides, n_columns):
    model = build(**overrides)
    off = 0.1 / (n_columns - 1)
    expected = torch.full((n_columns, n_columns), off).fill_diagonal_(0.9)
    for stitch, width in zip(model.stitches, SMALL["column_hidden"]):
        alpha = stitch.alpha.detach()
        if overrides.get("alpha_per_unit"):
            assert alpha.shape == (n_columns, n_columns, width)
            alpha_units = alpha.permute(2, 0, 1)
        else:
            alpha_units = alpha.unsqueeze(0)
        for a in alpha_units:
            torch.testing.assert_close(a, expected)
            torch.testing.assert_close(a.sum(1), torch.ones(n_columns))


def test_unit_mixes_columns():
    stitch = build().stitches[0]
    x = torch.randn(3, 2, 10)
    expected = torch.stack([0.9 * x[:, 0] + 0.1 * x[:, 1], 0.1 * x[:, 0] + 0.9 * x[:, 1]], 1)
    torch.testing.assert_close(stitch(x), expected)
    # Row t of alpha mixes into column t: x~_t = sum_u alpha[t, u] x_u.
    with torch.no_grad():
        stitch.alpha_raw.copy_(torch.tensor([[1.0, 0.0], [0.5, 0.5]]) / stitch.lr_scale)
    expected = torch.stack([x[:, 0], 0.5 * x[:, 0] + 0.5 * x[:, 1]], 1)
    torch.testing.assert_close(stitch(x), expected)


def test_per_unit_alpha_mixes_each_unit_separately():
    stitch = build(alpha_per_unit=True).stitches[1]  # width 6
    x = torch.randn(3, 2, 6)
    alpha = torch.rand(2, 2, 6)
    with torch.no_grad():
        stitch.alpha_raw.copy_(alpha / stitch.lr_scale)
    expected = torch.stack([alpha[t, 0] * x[:, 0] + alpha[t, 1] * x[:, 1] for t in (0, 1)], 1)
    torch.testing.assert_close(stitch(x), expected)


@pytest.mark.parametrize("overrides", [{}, {"alpha_per_unit": True}])
def test_identity_units_give_independent_columns(overrides):
    model = build(**overrides)
    set_identity(model)
    b = batch()
    before = logits(model, b)
    perturb_column(model, column=1)
    after = logits(model, b)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3


def _column_layer(x, linear, norm, t):
    """Group ``t`` of a grouped ``Linear -> BN (eval) -> ReLU`` layer, written out by hand."""
    units = slice(t * linear.out_dim, (t + 1) * linear.out_dim)
    y = x @ linear.weight[t] + linear.bias[t]
    y = (y - norm.running_mean[units]) / torch.sqrt(norm.running_var[units] + norm.eps)
    return torch.relu(y * norm.weight[units] + norm.bias[units])


def test_identity_units_equal_separate_columns():
    """With alpha = I, task t's logit is column t's MLP on the shared input layer."""
    model = build()
    set_identity(model)
    b = batch()
    with torch.no_grad():
        h = model.input_layer(model.encoder(b))  # [B, input_width]
        for t in range(SCHEMA.n_tasks):
            x = h
            for mlp in [*model.layers, model.towers]:
                for linear, norm in zip(mlp.linears, mlp.norms):
                    x = _column_layer(x, linear, norm, t)
            head = model.towers.head
            expected = (x @ head.weight[t] + head.bias[t]).squeeze(-1)
            torch.testing.assert_close(model(b).logits[:, t], expected)


def test_default_units_share_between_columns():
    model = build()
    b = batch()
    before = logits(model, b)
    perturb_column(model, column=1)
    assert (logits(model, b)[:, 0] - before[:, 0]).abs().max() > 1e-4


def _step(model, opt, b):
    out = model(b)
    loss = F.binary_cross_entropy_with_logits(out.logits, b.labels)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_one_adam_step_moves_alpha_by_scale_times_lr():
    model = build().train()
    lr = 1e-4
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    before = [s.alpha.detach().clone() for s in model.stitches]
    other = model.input_layer[0].weight.detach().clone()
    _step(model, opt, batch(64))
    for stitch, a0 in zip(model.stitches, before):
        moved = (stitch.alpha.detach() - a0).abs()
        # Adam's first step moves every coordinate by lr * g / (|g| + eps) ~ lr.
        torch.testing.assert_close(moved, torch.full_like(moved, 100 * lr), rtol=2e-2, atol=0)
    assert (model.input_layer[0].weight.detach() - other).abs().max() <= lr * 1.001


def _train_with_alpha_group(alpha_lr_scale, alpha_lr_factor, lr, b, steps=5):
    """Train a fresh model with Adam, ``alpha_lr_factor * lr`` for the alpha parameters."""
    model = build(seed=3, alpha_lr_scale=alpha_lr_scale).train()
    alphas = [s.alpha_raw for s in model.stitches]
    rest = [p for n, p in model.named_parameters() if "alpha_raw" not in n]
    opt = torch.optim.Adam(
        [{"params": rest}, {"params": alphas, "lr": alpha_lr_factor * lr}], lr=lr
    )
    for _ in range(steps):
        _step(model, opt, b)
    return model.eval()


def test_reparameterisation_matches_an_alpha_parameter_group():
    """x100 via alpha = 100 * alpha_raw follows Adam with a 100x lr group for alpha."""
    lr, b = 1e-3, batch(64)
    scaled = _train_with_alpha_group(100.0, 1.0, lr, b)  # what the runner does
    grouped = _train_with_alpha_group(1.0, 100.0, lr, b)  # the paper's recipe
    plain = _train_with_alpha_group(1.0, 1.0, lr, b)  # no multiplier: the control
    for s, g, p in zip(scaled.stitches, grouped.stitches, plain.stitches):
        torch.testing.assert_close(s.alpha, g.alpha, rtol=0, atol=1e-4)
        assert (p.alpha - g.alpha).abs().max() > 0.1
    # Float rounding differences get amplified by Adam's normalisation, so compare the gap
    # with the one the control leaves.
    gap = (logits(scaled, b) - logits(grouped, b)).abs().max()
    control_gap = (logits(plain, b) - logits(grouped, b)).abs().max()
    assert gap < 0.05 * control_gap, (gap, control_gap)


def test_scenario_task_columns_pick_own_scenario():
    model = build(scenario_towers=True)
    S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
    assert model.C == S * T
    set_identity(model)
    b = batch(64)
    before = logits(model, b)
    perturb_column(model, column=2 * T + 1)  # (scenario 2, task 1)
    changed = (logits(model, b) - before).abs() > 1e-6
    assert changed[b.scenario == 2, 1].all()
    assert not changed[b.scenario != 2].any()
    assert not changed[:, 0].any()


def test_variants_conform():
    [spec] = mssbench_register_models()
    for extra in ({"scenario_towers": True}, {"alpha_per_unit": True}):
        variant = dataclasses.replace(spec, check_params={**spec.check_params, **extra})
        failed = [
            r
            for r in run_checks(variant, checks=QUICK_CHECKS)
            if r.status not in ("passed", "skipped")
        ]
        assert not failed, (extra, failed)
