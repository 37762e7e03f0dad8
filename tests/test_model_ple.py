"""PLE: routing of the CGC levels (Tang et al., RecSys 2020, doi:10.1145/3383313.3412236;
plugins/mssbench_ple/README.md)."""

import dataclasses

import pytest
import torch
from mssbench_ple import DEFAULTS, mssbench_register_models
from mssbench_ple.model import PLE

from mssbench.testing import make_schema, run_checks
from mssbench.testing.checks import ALL_CHECKS
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
# The conformance checks for variants, without the slow training-loss check.
QUICK_CHECKS = [c for c in ALL_CHECKS if c.__name__ != "check_learns"]
SMALL = {
    "embed_dim": 4,
    "level_widths": [12, 8],
    "n_specific_experts": 2,
    "n_shared_experts": 3,
    "tower_hidden": [6],
    "dropout": 0.0,
}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return PLE(SCHEMA, **{**DEFAULTS, **SMALL, **overrides}).eval()


def batch(n=32, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def perturb_specific_experts(level, task):
    """Add noise to every weight of ``task``'s specific experts in ``level``."""
    m = level.n_specific
    groups = slice(task * m, (task + 1) * m)
    with torch.no_grad():
        for linear in level.experts.linears:
            linear.weight[groups] += torch.randn_like(linear.weight[groups])
            linear.bias[groups] += torch.randn_like(linear.bias[groups])


def logits(model, b):
    with torch.no_grad():
        return model(b).logits


def test_defaults():
    [spec] = mssbench_register_models()
    assert spec.name == "ple"
    assert spec.defaults["n_shared_experts"] == 4
    assert spec.defaults["n_specific_experts"] == 4
    assert spec.defaults["level_widths"] == [512, 256]
    assert spec.defaults["tower_hidden"] == [128, 64]
    assert spec.defaults["dropout"] == 0.2
    assert spec.defaults["embed_dim"] == 128
    assert spec.defaults["scenario_towers"] is False
    assert spec.tags["scenario_handling"]
    model = spec.build(SCHEMA, **spec.defaults)
    assert [lvl.out_dim for lvl in model.levels] == [512, 256]
    # Each expert is one MLP layer of its level's width.
    assert [len(lvl.experts.linears) for lvl in model.levels] == [1, 1]
    assert model.levels[0].experts.n_groups == 2 * 4 + 4


@pytest.mark.parametrize("n_levels", [1, 2, 3])
def test_gate_sizes_and_no_shared_gate_at_last_level(n_levels):
    model = build(level_widths=[8] * n_levels)
    m_sp, m_sh, T = SMALL["n_specific_experts"], SMALL["n_shared_experts"], SCHEMA.n_tasks
    for j, level in enumerate(model.levels):
        assert level.task_gates.shape[0] == T
        assert level.task_gates.shape[-1] == m_sp + m_sh
        if j == n_levels - 1:
            assert level.shared_gate is None
        else:
            assert level.shared_gate.out_features == T * m_sp + m_sh
    assert not any(
        "shared_gate" in n for n in model.state_dict() if n.startswith(f"levels.{n_levels - 1}.")
    )


def test_task_gate_mixes_own_and_shared_experts_only():
    level = build(level_widths=[8]).levels[0]
    m_sp, m_sh, T = 2, 3, SCHEMA.n_tasks
    shared = list(range(T * m_sp, T * m_sp + m_sh))
    for k in range(T):
        assert level.own_experts[k].tolist() == list(range(k * m_sp, (k + 1) * m_sp)) + shared
    # Task experts read their own task stream, shared experts the shared stream (index T).
    assert level.expert_stream.tolist() == [0, 0, 1, 1, T, T, T]


def test_one_level_task_output_ignores_other_tasks_specific_experts():
    model = build(level_widths=[8])
    b = batch()
    before = logits(model, b)
    perturb_specific_experts(model.levels[0], task=1)
    after = logits(model, b)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3


def test_one_level_task_output_depends_on_shared_experts():
    model = build(level_widths=[8])
    b = batch()
    before = logits(model, b)
    groups = slice(SCHEMA.n_tasks * SMALL["n_specific_experts"], None)
    with torch.no_grad():
        model.levels[0].experts.linears[0].weight[groups] += 1.0
    after = logits(model, b)
    assert ((after - before).abs().amax(0) > 1e-3).all()


def test_shared_gate_passes_other_tasks_experts_to_next_level():
    """Two levels: task 1's level-1 experts reach task 0 only through the shared gate."""
    model = build()
    b = batch()
    before = logits(model, b)
    perturb_specific_experts(model.levels[0], task=1)
    assert (logits(model, b)[:, 0] - before[:, 0]).abs().max() > 1e-4


def test_shared_experts_read_the_shared_stream():
    """The level-1 shared gate matters: level-2 shared experts read its output (P-M3)."""
    model = build()
    b = batch()
    before = logits(model, b)
    with torch.no_grad():
        model.levels[0].shared_gate.weight.mul_(-3.0)
    assert ((logits(model, b) - before).abs().amax(0) > 1e-4).all()


def test_last_level_specific_experts_stay_private():
    model = build()
    b = batch()
    before = logits(model, b)
    perturb_specific_experts(model.levels[-1], task=1)
    after = logits(model, b)
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3


def test_scenario_towers_are_per_scenario():
    model = build(scenario_towers=True)
    S, T = SCHEMA.n_scenarios, SCHEMA.n_tasks
    assert model.towers.n_groups == S * T
    b = batch(64)
    before = logits(model, b)
    with torch.no_grad():  # tower of (scenario 1, task 0) only
        model.towers.head.weight[1 * T + 0] += 1.0
    changed = (logits(model, b) - before).abs() > 1e-6
    assert changed[b.scenario == 1, 0].all()
    assert not changed[b.scenario != 1].any()
    assert not changed[:, 1].any()


def test_invalid_expert_counts_rejected():
    with pytest.raises(ValueError, match="n_shared_experts"):
        build(n_shared_experts=0)
    with pytest.raises(ValueError, match="level_widths"):
        build(level_widths=[])


def test_variants_conform():
    [spec] = mssbench_register_models()
    for extra in ({"scenario_towers": True}, {"level_widths": [8], "n_specific_experts": 0}):
        variant = dataclasses.replace(spec, check_params={**spec.check_params, **extra})
        failed = [
            r
            for r in run_checks(variant, checks=QUICK_CHECKS)
            if r.status not in ("passed", "skipped")
        ]
        assert not failed, (extra, failed)
