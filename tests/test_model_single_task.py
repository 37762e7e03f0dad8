"""Single-task baseline: no parameter shared between tasks, or between scenarios (§10)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from mssbench_single_task import DEFAULTS, mssbench_register_models
from mssbench_single_task.model import SingleTask

from mssbench.spec import Batch
from mssbench.testing import make_schema, run_checks
from mssbench.testing.checks import ALL_CHECKS
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
QUICK_CHECKS = [c for c in ALL_CHECKS if c.__name__ != "check_learns"]
SMALL = {"embed_dim": 4, "bottom_hidden": [12, 8], "tower_hidden": [6], "dropout": 0.0}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return SingleTask(SCHEMA, **{**DEFAULTS, **SMALL, **overrides})


def batch(n=64, seed=1):
    return make_split(SCHEMA, n, seed=seed).batch(slice(0, n))


def rows(b, mask):
    return Batch(*(t[mask] for t in b))


def grouped_parameters(module, n_groups):
    """``(name, p)``; every parameter of the grouped networks is group-major (``p.view(G, -1)``)."""
    for name, p in module.named_parameters():
        assert p.numel() % n_groups == 0, name
        yield name, p


def test_defaults():
    [spec] = mssbench_register_models()
    assert spec.name == "single_task"
    assert spec.defaults == {
        "embed_dim": 128,
        "bottom_hidden": [512, 256],
        "tower_hidden": [128, 64],
        "dropout": 0.2,
        "scenario_towers": False,
    }
    assert spec.tags["scenario_handling"]
    model = spec.build(SCHEMA, **spec.defaults)
    assert len(model.networks) == 1 and model.networks[0].G == SCHEMA.n_tasks
    assert model.networks[0].scenario_as_feature


@pytest.mark.parametrize("task", [0, 1])
def test_task_loss_reaches_only_its_own_network(task):
    model = build(dropout=0.2).train()
    b = batch()
    logits = model(b).logits
    F.binary_cross_entropy_with_logits(logits[:, task], b.labels[:, task]).backward()
    T = SCHEMA.n_tasks
    for name, p in grouped_parameters(model, T):
        grad = p.grad.view(T, -1)
        assert grad[task].abs().sum() > 0, f"{name}: no gradient in network {task}"
        for other in range(T):
            if other != task:
                assert not grad[other].any(), f"{name}: gradient leaks into network {other}"


def test_perturbing_one_network_leaves_other_tasks_unchanged():
    model = build().eval()
    b = batch()
    with torch.no_grad():
        before = model(b).logits
        for p in model.parameters():
            p.view(SCHEMA.n_tasks, -1)[1] += torch.randn_like(p.view(SCHEMA.n_tasks, -1)[1])
        after = model(b).logits
    torch.testing.assert_close(after[:, 0], before[:, 0], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().max() > 1e-3


def test_networks_are_initialised_independently():
    emb = build().networks[0].embedding.weight.view(SCHEMA.n_tasks, -1)
    assert not torch.equal(emb[0], emb[1])
    # Xavier-uniform over each network's own [V, d] table, as a stand-alone encoder.
    vocab = sum(SCHEMA.vocab_sizes) + SCHEMA.n_scenarios
    bound = (6 / (vocab + SMALL["embed_dim"])) ** 0.5
    assert emb.abs().max() <= bound and emb.abs().max() > 0.8 * bound


def test_per_scenario_holds_one_network_per_scenario_and_task():
    model = build(scenario_towers=True)
    assert len(model.networks) == SCHEMA.n_scenarios
    assert all(net.G == SCHEMA.n_tasks and not net.scenario_as_feature for net in model.networks)
    heads = [k for k in model.state_dict() if k.endswith("tower.head.weight")]
    assert len(heads) == SCHEMA.n_scenarios


@pytest.mark.parametrize("scenario", [0, 2])
def test_per_scenario_rows_change_only_their_scenario(scenario):
    model = build(scenario_towers=True, dropout=0.2).train()
    b = batch()
    own = b.scenario == scenario
    logits = model(b).logits
    F.binary_cross_entropy_with_logits(logits[own], b.labels[own]).backward()
    for s, net in enumerate(model.networks):
        grads = [p.grad for p in net.parameters()]
        if s == scenario:
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None or not g.any() for g in grads)


def test_per_scenario_network_sees_only_its_own_rows():
    """Mixed batch vs own rows only: same gradients and running statistics for network s.

    Fails if every network ran on every row (whole-batch batch-norm statistics).
    """
    b = batch()
    own = b.scenario == 1
    grads, stats = [], []
    for inputs in (b, rows(b, own)):
        model = build(scenario_towers=True).train()
        logits = model(inputs).logits
        keep = inputs.scenario == 1
        F.binary_cross_entropy_with_logits(
            logits[keep], inputs.labels[keep], reduction="sum"
        ).backward()
        net = model.networks[1]
        grads.append([p.grad.clone() for p in net.parameters()])
        stats.append([t.clone() for t in net.buffers() if t.is_floating_point()])
    for g_mixed, g_own in zip(*grads):
        torch.testing.assert_close(g_mixed, g_own)
    for s_mixed, s_own in zip(*stats):
        torch.testing.assert_close(s_mixed, s_own)


def test_per_scenario_keeps_batch_order_and_matches_own_network():
    model = build(scenario_towers=True).eval()
    b = batch()
    with torch.no_grad():
        logits = model(b).logits
        for s, net in enumerate(model.networks):
            mask = b.scenario == s
            torch.testing.assert_close(logits[mask], net(*rows(b, mask)[:3]))


def test_per_scenario_single_row_scenario_in_training():
    model = build(scenario_towers=True).train()
    b = batch(32)
    b = Batch(b.categorical, b.numeric, torch.tensor([0] * 16 + [1] * 15 + [2]), b.labels)
    norm = model.networks[2].bottom.norms[0]
    mean, var = norm.running_mean.clone(), norm.running_var.clone()
    out = model(b).logits
    assert torch.isfinite(out).all()
    assert norm.training  # modes restored
    torch.testing.assert_close(norm.running_mean, mean, rtol=0, atol=0)
    torch.testing.assert_close(norm.running_var, var, rtol=0, atol=0)
    assert not torch.equal(model.networks[1].bottom.norms[0].running_mean, mean)


def test_per_scenario_unknown_scenario_rejected():
    model = build(scenario_towers=True).eval()
    b = batch(8)
    b = Batch(b.categorical, b.numeric, torch.full_like(b.scenario, SCHEMA.n_scenarios), b.labels)
    with pytest.raises(ValueError, match="scenario ids"):
        model(b)


def test_per_scenario_conforms():
    [spec] = mssbench_register_models()
    variant = dataclasses.replace(spec, check_params={**spec.check_params, "scenario_towers": True})
    failed = [
        r for r in run_checks(variant, checks=QUICK_CHECKS) if r.status not in ("passed", "skipped")
    ]
    assert not failed, failed
