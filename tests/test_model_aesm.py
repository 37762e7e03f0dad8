"""Mechanism tests of the AESM² plugin (Zou et al., "Automatic Expert Selection for
Multi-Scenario and Multi-Task Search", SIGIR 2022,
arXiv:2205.14321; plugins/mssbench_aesm/README.md)."""

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_aesm import DEFAULTS, mssbench_register_models
from mssbench_aesm.model import (
    AESM2,
    DebiasedBatchNorm1d,
    ExpertSelectionLayer,
    expert_log_distribution,
    kl_distances,
    masked_mixing_weights,
    multiplicative_mixing_weights,
    selection_mask,
)

from mssbench.api import build_model
from mssbench.cli import main
from mssbench.nn import ESMMHead
from mssbench.runners.trainer import task_weights
from mssbench.spec import Implies, resolve_task_weights
from mssbench.testing import make_schema, make_split

[SPEC] = mssbench_register_models()
SMALL = dict(SPEC.check_params)


def build(schema=None, **overrides):
    torch.manual_seed(0)
    return AESM2(schema or make_schema(), **{**DEFAULTS, **SMALL, **overrides})


def batch_of(schema, n=64, seed=1):
    return make_split(schema, n, seed=seed).batch(slice(0, n))


def make_layer(n_gates=3, n_experts=5, k_sp=2, k_sh=2, noise=0.0, **overrides):
    torch.manual_seed(0)
    kwargs = dict(
        in_dim=6,
        cond_dim=2,
        n_experts=n_experts,
        n_gates=n_gates,
        hidden=[4],
        k_sp=k_sp,
        k_sh=k_sh,
        noise_scale=noise,
        activation="relu",
        dropout=0.0,
        gate_norm="bn",
        bn_momentum=0.1,
    )
    return ExpertSelectionLayer(**{**kwargs, **overrides})


def layer_inputs(n=32, n_gates=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, cond = torch.randn(n, 6, generator=g), torch.randn(n, 2, generator=g)
    return h, cond, torch.randint(0, n_gates, (n,), generator=g)


def fixed_gates(layer, logits):
    """Make the layer's gates output ``logits [m, n]`` for every sample (``gate_norm="none"``)."""
    with torch.no_grad():
        layer.gates.weight.zero_()
        layer.gates.bias.copy_(torch.as_tensor(logits, dtype=torch.float32).flatten())


def dense_mixture(layer, h, cond, own):
    """An MMoE layer: softmax over all experts of the own gate row's clean logits."""
    row = layer.gate_logits(h, cond)[torch.arange(len(own)), own]
    return torch.einsum("bn,bnd->bd", torch.softmax(row, dim=1), layer.experts(h))


# Item 1: with K_sp = n (or K_sh = n) and zero noise, the layer is an MMoE layer.
@pytest.mark.parametrize("k_sp, k_sh", [(5, 0), (0, 5), (5, 2)])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_full_selection_equals_mmoe_layer_with_own_gate_row(k_sp, k_sh, mode):
    layer = getattr(make_layer(k_sp=k_sp, k_sh=k_sh), mode)()
    h, cond, own = layer_inputs()
    out, _, _ = layer(h, cond, own)
    assert torch.allclose(out, dense_mixture(layer, h, cond, own), atol=1e-6)


def test_mixing_uses_clean_logits_even_with_huge_noise():
    # P-A2: the noise only moves the selection; with every expert selected it has no effect.
    layer = make_layer(k_sp=5, k_sh=0, noise=100.0).train()
    h, cond, own = layer_inputs()
    torch.manual_seed(3)
    out, _, _ = layer(h, cond, own)
    assert torch.allclose(out, dense_mixture(layer, h, cond, own), atol=1e-6)


def test_partial_selection_differs_from_dense_mixture():
    layer = make_layer(k_sp=1, k_sh=1).eval()
    h, cond, own = layer_inputs()
    out, _, _ = layer(h, cond, own)
    assert not torch.allclose(out, dense_mixture(layer, h, cond, own), atol=1e-3)


# Item 2: exact zeros for unselected experts, no double weighting (P-A1).
# Gates (m = 2) over n = 4 experts, own gate 0. Expert 0 peaks at gate 0 (most specific),
# expert 1 leans to gate 0 (2nd specific, 2nd shared), expert 2 is flat (most shared), expert 3
# peaks at gate 1. With K_sp = K_sh = 2 the sets are {0, 1} and {2, 1}: expert 1 is in both and
# expert 3, whose own-row logit is negative, is left out.
LOGITS = [[4.0, 1.0, 0.0, -3.0], [0.0, 0.0, 0.0, 0.0]]


def test_selected_sets_on_constructed_gates():
    log_p = expert_log_distribution(torch.tensor([LOGITS]))
    d_sp, d_sh = kl_distances(log_p, torch.tensor([0]))
    selected, index_sp, index_sh = selection_mask(d_sp, d_sh, 2, 2)
    assert set(index_sp[0].tolist()) == {0, 1}
    assert set(index_sh[0].tolist()) == {1, 2}
    assert selected[0].tolist() == [True, True, True, False]


def test_unselected_negative_logit_gets_zero_weight_and_overlap_counts_once():
    layer = make_layer(n_gates=2, n_experts=4, k_sp=2, k_sh=2, gate_norm="none").eval()
    fixed_gates(layer, LOGITS)
    h, cond, _ = layer_inputs(8, n_gates=2)
    own = torch.zeros(8, dtype=torch.long)
    out, _, _ = layer(h, cond, own)
    w = torch.softmax(torch.tensor([4.0, 1.0, 0.0]), dim=0)  # expert 1 not doubled
    expected = torch.einsum("n,bnd->bd", w, layer.experts(h)[:, :3])
    assert torch.allclose(out, expected, atol=1e-6)


def test_masked_weights_are_exact_zeros_for_negative_logits():
    logits = -torch.rand(50, 6) * 20 - 1  # every logit negative
    selected = torch.rand(50, 6) < 0.5
    selected[:, 0] = True
    w = masked_mixing_weights(logits, selected)
    assert torch.equal(w[~selected], torch.zeros(int((~selected).sum())))
    assert torch.allclose(w.sum(1), torch.ones(50))
    for b in range(50):
        assert torch.allclose(w[b, selected[b]], torch.softmax(logits[b, selected[b]], 0))


def test_unselected_experts_still_get_a_zero_gradient():
    layer = make_layer(k_sp=1, k_sh=1).train()
    out, l_sp, l_sh = layer(*layer_inputs())
    (out.sum() + l_sp + l_sh).backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in layer.parameters())


# Item 3: determinism in eval, seeded exploration in training, noise std.
def test_eval_is_deterministic_and_ignores_the_global_rng():
    model = build().eval()
    batch = batch_of(make_schema())
    torch.manual_seed(1)
    a = model(batch)
    torch.manual_seed(2)
    b = model(batch)
    assert torch.equal(a.logits, b.logits)
    assert a.aux_loss.item() == 0.0 == b.aux_loss.item()


def test_train_selection_varies_with_seed_and_repeats_with_the_same_seed():
    layer = make_layer(noise=0.1).train()
    logits = layer.gate_logits(*layer_inputs(256)[:2]).detach()
    own = layer_inputs(256)[2]

    def selection(seed):
        torch.manual_seed(seed)
        return layer.select(logits, own)[0]

    assert torch.equal(selection(0), selection(0))
    assert not torch.equal(selection(0), selection(1))
    layer.eval()
    assert torch.equal(selection(0), selection(1))


def test_noise_std_is_noise_scale_times_n_experts():
    layer = make_layer(n_experts=10, k_sp=2, k_sh=2, noise=0.1).train()
    assert layer.noise_std == pytest.approx(1.0)
    zeros = torch.zeros(4000, 3, 10)
    torch.manual_seed(0)
    noise = layer.perturb(zeros)
    assert noise.mean().abs() < 0.02
    assert noise.std().item() == pytest.approx(1.0, rel=0.02)
    assert torch.equal(layer.eval().perturb(zeros), zeros)


def test_model_default_noise_std_per_block():
    model = AESM2(make_schema(), **DEFAULTS)
    assert [layer.noise_std for layer in model.scenario_block[0]] == pytest.approx([1.0, 1.0])
    assert [c[0].noise_std for c in model.task_block] == pytest.approx([0.3, 0.3])


# Item 4: distributions and distances.
def test_expert_distribution_sums_to_one_over_gates():
    log_p = expert_log_distribution(torch.randn(7, 4, 9) * 5)
    assert torch.allclose(log_p.exp().sum(dim=1), torch.ones(7, 9), atol=1e-6)


def test_distances_match_kl_definitions():
    logits = torch.randn(5, 4, 6, dtype=torch.float64)
    own = torch.tensor([0, 3, 1, 2, 3])
    d_sp, d_sh = kl_distances(expert_log_distribution(logits), own)
    p = torch.softmax(logits, dim=1)
    for b in range(5):
        onehot = torch.zeros(4, dtype=torch.float64)
        onehot[own[b]] = 1
        u = torch.full((4,), 0.25, dtype=torch.float64)
        for k in range(6):
            q = p[b, :, k]
            # The official core's epsilon-smoothed KL to the one-hot is ~ -log p[own].
            eps = 1e-9
            smoothed = ((onehot + eps) * ((onehot + eps) / (q + eps)).log()).sum()
            assert d_sp[b, k].item() == pytest.approx(-math.log(q[own[b]].item()), abs=1e-12)
            assert d_sp[b, k].item() == pytest.approx(smoothed.item(), abs=1e-6)
            assert d_sh[b, k].item() == pytest.approx((u * (u / q).log()).sum().item(), abs=1e-12)
    assert (d_sp >= 0).all() and (d_sh >= -1e-12).all()


def test_distances_and_their_gradients_are_finite_at_extreme_logits():
    logits = (torch.randint(0, 2, (16, 4, 10)).float() * 100 - 50).requires_grad_()
    d_sp, d_sh = kl_distances(expert_log_distribution(logits), torch.randint(0, 4, (16,)))
    assert torch.isfinite(d_sp).all() and torch.isfinite(d_sh).all()
    assert d_sp.max() > 50  # the exact distance, not capped by an epsilon
    (d_sp.sum() + d_sh.sum()).backward()
    assert torch.isfinite(logits.grad).all()


# Item 5: the auxiliary loss.
def test_layer_kl_losses_are_means_over_the_selected_experts():
    layer = make_layer(n_gates=2, n_experts=4, k_sp=2, k_sh=2, gate_norm="none").train()
    fixed_gates(layer, LOGITS)
    h, cond, _ = layer_inputs(8, n_gates=2)
    _, l_sp, l_sh = layer(h, cond, torch.zeros(8, dtype=torch.long))
    p = torch.softmax(torch.tensor(LOGITS), dim=0)  # [m, n]
    assert l_sp.item() == pytest.approx(-(p[0, 0].log() + p[0, 1].log()).item() / 2, rel=1e-5)
    kl_u = (0.5 * (0.5 / p).log()).sum(0)
    assert l_sh.item() == pytest.approx((kl_u[1] + kl_u[2]).item() / 2, rel=1e-5)


def test_aux_loss_is_the_weighted_sum_of_one_term_per_layer_and_task_layer_task():
    schema = make_schema()
    # no dropout: its masks advance with every call, the noise is re-seeded below
    model = build(schema, lambda_sp=0.3, lambda_sh=0.05, dropout=0.0).train()
    batch = batch_of(schema)
    torch.manual_seed(5)
    logits, sp, sh = model.forward_terms(batch)
    n_terms = DEFAULTS["scenario_layers"] + DEFAULTS["task_layers"] * schema.n_tasks
    assert len(sp) == len(sh) == n_terms == 6
    assert all(t.item() > 0 for t in sp + sh)
    torch.manual_seed(5)
    out = model(batch)
    assert torch.equal(out.logits, logits)
    expected = 0.3 * torch.stack(sp).sum() + 0.05 * torch.stack(sh).sum()
    assert out.aux_loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_aux_loss_is_zero_in_eval():
    schema = make_schema()
    model = build(schema).eval()
    _, sp, sh = model.forward_terms(batch_of(schema))
    assert sp == [] and sh == []
    assert model(batch_of(schema)).aux_loss.item() == 0.0


def test_kl_losses_reach_gates_and_indicator_embeddings():
    schema = make_schema()
    model = build(schema, lambda_sp=1.0, lambda_sh=1.0).train()
    model(batch_of(schema)).aux_loss.backward()
    assert model.scenario_block[0][0].gates.weight.grad.abs().sum() > 0
    assert model.scenario_embeddings[0].weight.grad.abs().sum() > 0
    assert model.task_embedding.weight.grad.abs().sum() > 0


# Item 6: defaults.
def test_defaults_follow_the_official_configuration():
    d = DEFAULTS
    assert (d["scenario_experts"], d["task_experts"]) == (10, 3)
    assert (d["scenario_topk_specific"], d["scenario_topk_shared"]) == (2, 2)
    assert (d["task_topk_specific"], d["task_topk_shared"]) == (1, 1)
    assert (d["scenario_expert_hidden"], d["task_expert_hidden"]) == ([64], [32])
    assert d["scenario_noise_scale"] == d["task_noise_scale"] == 0.1
    assert d["dropout"] == 0.1 and d["expert_activation"] == "relu"
    assert (d["scenario_layers"], d["task_layers"]) == (2, 2)
    assert (d["lambda_sp"], d["lambda_sh"]) == (1e-3, 1e-4)
    assert d["task_weights"] == []  # the published 0.1 / 1 by task role (test below)
    assert d["share_task_layer_params"] is True and d["gate_norm"] == "bn"
    assert d["scenario_tree"] == [] and d["bn_momentum"] == 0.001
    assert (d["embed_dim"], d["scenario_embed_dim"], d["task_embed_dim"]) == (16, 8, 8)
    assert d["tower_hidden"] == [32]
    assert SPEC.tags["head"] == "esmm" and "scenario_handling" in SPEC.tags
    assert "2205.14321" in SPEC.paper and "SIGIR 2022" in SPEC.paper
    assert json.loads(json.dumps(d)) == d


def test_default_model_shapes():
    model = AESM2(make_schema(), **DEFAULTS)
    assert [layer.out_dim for layer in model.scenario_block[0]] == [64, 64]
    assert [c[0].out_dim for c in model.task_block] == [32, 32]
    assert model.scenario_block[0][0].n_gates == 3 and model.task_block[0][0].n_gates == 2
    expert_bn = model.scenario_block[0][0].experts.norms[0]
    assert (expert_bn.momentum, expert_bn.eps) == (0.001, 1e-3)


# Item 7: task-layer parameters shared across tasks.
def task_block_count(n_tasks, share):
    schema = make_schema(tasks=[f"t{i}" for i in range(n_tasks)], implies=False)
    model = build(schema, share_task_layer_params=share, task_weights=[])
    return sum(p.numel() for p in model.task_block.parameters()), model


def test_shared_task_layers_do_not_multiply_with_the_number_of_tasks():
    # The T gates of a task layer are inherent (one gate per task); only they and the task
    # embedding grow with T. The experts exist once, not once per task.
    n2, m2 = task_block_count(2, True)
    n3, m3 = task_block_count(3, True)
    # One more gate per task layer: FC weights plus batch-norm scale and shift.
    extra = sum(c[0].n_experts * (c[0].gates.in_features + 2) for c in m2.task_block)
    assert n3 - n2 == extra
    experts = [sum(p.numel() for p in c[0].experts.parameters()) for c in m2.task_block]
    assert experts == [sum(p.numel() for p in c[0].experts.parameters()) for c in m3.task_block]
    assert all(len(c) == 1 for c in m3.task_block)
    n2_own, _ = task_block_count(2, False)
    assert n2_own == 2 * n2


def test_unshared_task_layers_give_each_task_its_own_layer():
    _, model = task_block_count(2, False)
    a, b = model.task_block[0]
    assert a.experts.weights[0] is not b.experts.weights[0]
    schema = model.encoder.schema
    assert model(batch_of(schema)).logits.shape == (64, 2)


# Item 8: a level with one gate is a plain mixture of experts.
def test_single_gate_layer_is_a_plain_moe():
    layer = make_layer(n_gates=1, k_sp=1, k_sh=1, noise=1.0).train()
    h, cond, _ = layer_inputs()
    own = torch.zeros(32, dtype=torch.long)
    out, l_sp, l_sh = layer(h, cond, own)
    assert l_sp is None and l_sh is None
    assert torch.allclose(out, dense_mixture(layer, h, cond, own), atol=1e-6)


@pytest.mark.parametrize(
    "schema",
    [
        make_schema(n_scenarios=1),
        make_schema(tasks=["ctr"]),
        make_schema(n_scenarios=1, tasks=["a"]),
    ],
    ids=["one-scenario", "one-task", "one-of-each"],
)
def test_model_with_single_gate_levels_has_no_nan(schema):
    model = build(schema, task_weights=[] if schema.n_tasks == 1 else [0.1, 1.0]).train()
    batch = batch_of(schema)
    out = model(batch)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.aux_loss)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels)
    (loss + out.aux_loss).backward()
    assert all(p.grad is None or p.grad.isfinite().all() for p in model.parameters())
    model.eval()
    assert torch.isfinite(model(batch).logits).all()


# Scenario tree (P-A4, P-A6) and gate normalisation (P-A7).
def test_scenario_tree_levels_have_their_own_parameters_and_path_indicators():
    schema = make_schema()  # 3 scenarios
    model = build(schema, scenario_tree=[[0, 0, 1]])
    d_s, width = SMALL["scenario_embed_dim"], model.encoder.out_dim
    assert model.level_sizes == [2, 3]
    (l0a, _), (l1a, _) = model.scenario_block
    assert (l0a.n_gates, l1a.n_gates) == (2, 3)
    assert l0a.gates.in_features == width + d_s
    assert l1a.gates.in_features == SMALL["scenario_expert_hidden"][-1] + 2 * d_s
    ids = {id(p) for p in l0a.parameters()} & {id(p) for p in l1a.parameters()}
    assert not ids
    scenario = torch.tensor([0, 1, 2])
    level0, level1 = model.indicators(scenario)
    emb0, emb1 = model.scenario_embeddings
    assert torch.equal(level0, emb0(torch.tensor([0, 0, 1])))
    assert torch.equal(level1, torch.cat([level0, emb1(scenario)], dim=1))
    n_terms = 2 * DEFAULTS["scenario_layers"] + DEFAULTS["task_layers"] * 2
    assert len(model.train().forward_terms(batch_of(schema))[1]) == n_terms


@pytest.mark.parametrize(
    "tree, message",
    [
        ([[0, 1]], "each of the 3 scenarios"),
        ([[0, 2, 2]], "without gaps"),
        ([[0, 0, 1], [0, 1, 1]], "nest"),
    ],
)
def test_bad_scenario_tree_is_rejected(tree, message):
    with pytest.raises(ValueError, match=message):
        build(scenario_tree=tree)


def test_gate_norm_options():
    bn = make_layer(gate_norm="bn")
    assert bn.gates.bias is None and isinstance(bn.gate_norm, torch.nn.BatchNorm1d)
    plain = make_layer(gate_norm="none")
    assert plain.gates.bias is not None and isinstance(plain.gate_norm, torch.nn.Identity)
    with pytest.raises(ValueError, match="gate_norm"):
        make_layer(gate_norm="layer")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"scenario_topk_specific": 6}, "scenario_topk_specific"),
        ({"task_topk_specific": 0, "task_topk_shared": 0}, "must be >= 1"),
        ({"expert_activation": "gelu"}, "expert_activation"),
        ({"task_weights": [1.0]}, "one weight per task"),
        ({"bn_momentum": 0.0}, "bn_momentum"),
    ],
)
def test_invalid_hyper_parameters_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        build(**overrides)


# Task weights: declared on the spec, resolved by the core, kept by the ESMM head.
def weights_of(schema, **params):
    return resolve_task_weights(SPEC, schema, {**DEFAULTS, **params})


def test_task_weights_reach_the_loss_through_the_spec_and_the_esmm_head(registry):
    schema = make_schema()
    model = build_model(registry, "aesm", schema, {**SMALL, "task_weights": [0.5, 2.0]})
    head = ESMMHead(model, schema)
    assert task_weights(head, 2, torch.device("cpu")).tolist() == [0.5, 2.0]
    default = build_model(registry, "aesm", schema, dict(SMALL))
    assert task_weights(default, 2, torch.device("cpu")).tolist() == pytest.approx([0.1, 1.0])
    out = head(batch_of(schema))
    assert torch.isfinite(out.logits).all()
    assert (torch.sigmoid(out.logits[:, 1]) <= torch.sigmoid(out.logits[:, 0]) + 1e-6).all()


def test_default_task_weights_follow_the_task_roles():
    """CTR 0.1 and CTCVR 1 where the click -> purchase relation exists; 1 everywhere else."""
    related = make_schema(tasks=["ctr", "ctcvr"])
    assert weights_of(related) == (0.1, 1.0)
    # The parent is found by the relation, not by position.
    swapped = make_schema(tasks=["ctcvr", "ctr"], implies=False)
    swapped = dataclasses.replace(swapped, relations=(Implies("ctcvr", "ctr", "cvr"),))
    assert weights_of(swapped) == (1.0, 0.1)
    unrelated = make_schema(tasks=["income", "never_married"], implies=False)
    assert weights_of(unrelated) == (1.0, 1.0)


@pytest.mark.parametrize(
    "weights, message",
    [([1.0], "one weight per task"), (["a", "b"], "numbers"), ([1.0, -1.0], ">= 0")],
)
def test_bad_task_weights_are_rejected(weights, message):
    with pytest.raises(ValueError, match=message):
        build(task_weights=weights)


# Debiased batch-norm moving averages.
def test_debiased_batch_norm_eval_uses_the_batch_statistics_seen():
    """After a few batches of one distribution, eval normalises with that distribution's
    statistics; a plain BatchNorm1d at momentum 0.001 would still be near mean 0, variance 1."""
    torch.manual_seed(0)
    x = 5.0 + 0.2 * torch.randn(512, 3)
    bn, plain = (
        cls(3, eps=1e-3, momentum=0.001) for cls in (DebiasedBatchNorm1d, torch.nn.BatchNorm1d)
    )
    for norm in (bn, plain):
        norm.train()
        for _ in range(20):
            norm(x)
        norm.eval()
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0) + 1e-3)
    torch.testing.assert_close(bn(x), expected, rtol=0.0, atol=5e-3)
    assert (plain(x) - expected).abs().max() > 1.0


def test_debiased_batch_norm_untrained_is_the_identity_and_training_mode_is_unchanged():
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    bn = DebiasedBatchNorm1d(4, momentum=0.001).eval()
    torch.testing.assert_close(bn(x), x / math.sqrt(1 + bn.eps))
    plain = torch.nn.BatchNorm1d(4, momentum=0.001)
    torch.testing.assert_close(bn.train()(x), plain.train()(x))


def test_default_layers_use_debiased_batch_norm():
    model = build()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    layers = list(model.scenario_block.modules()) + list(model.task_block.modules())
    assert all(isinstance(m, DebiasedBatchNorm1d) for m in layers if m in norms)
    assert any(isinstance(m, DebiasedBatchNorm1d) for m in norms)


def test_cli_smoke_run_uses_the_esmm_head_on_related_tasks(tmp_path):
    small = [f"{k}={json.dumps(v)}" for k, v in SMALL.items()]
    args = ["run", "--plugin", "mssbench.testing.plugin", "-m", "aesm", "-d", "tiny-synth"]
    args += [x for kv in small for x in ("-p", kv)]
    args += ["-D", "n_train=600", "--epochs", "1", "--batch-size", "128", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    [record] = tmp_path.glob("*.json")
    rec = json.loads(record.read_text())
    assert rec["config"]["head"] == "esmm"
    assert rec["model"]["name"] == "aesm"


@pytest.mark.parametrize("scenario_layers, task_layers", [(0, 1), (1, 0), (0, 0)])
def test_empty_blocks_build_and_train_every_parameter(scenario_layers, task_layers):
    schema = make_schema()
    model = build(schema, scenario_layers=scenario_layers, task_layers=task_layers).train()
    batch = batch_of(schema, 128)
    out = model(batch)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels)
    (loss + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.parameters())


# The mask variants: additive (the paper, default) and multiplicative (the released code).
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k_sp=st.integers(1, 3), k_sh=st.integers(0, 3))
def test_additive_mask_never_weights_an_unselected_expert(seed, k_sp, k_sh):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, 6, generator=g) * 3  # about half negative, as after batch-norm
    d_sp, d_sh = torch.rand(16, 6, generator=g), torch.rand(16, 6, generator=g)
    selected, index_sp, index_sh = selection_mask(d_sp, d_sh, k_sp, k_sh)
    w = masked_mixing_weights(logits, selected)
    assert torch.equal(w[~selected], torch.zeros_like(w[~selected]))
    torch.testing.assert_close(w.sum(1), torch.ones(16))


def test_multiplicative_mask_follows_the_released_code_and_differs_from_additive():
    logits = torch.tensor([[-2.0, 0.5, 1.0, -0.1]])  # expert 0 unselected with a negative logit
    index_sp, index_sh = torch.tensor([[1, 2]]), torch.tensor([[2, 3]])  # expert 2 in both
    mult = multiplicative_mixing_weights(logits, index_sp, index_sh)
    factor = torch.tensor([[-1e9, 1.0, 2.0, 1.0]])
    torch.testing.assert_close(mult, torch.softmax(logits * factor, dim=1))
    assert mult[0, 0] > 0.99  # the unselected expert takes the weight (P-A1)
    selected = torch.tensor([[False, True, True, True]])
    add = masked_mixing_weights(logits, selected)
    assert add[0, 0] == 0
    torch.testing.assert_close(add[0, 1:], torch.softmax(logits[0, 1:], dim=0))


def test_mask_option_changes_the_model_outputs_and_is_checked():
    schema = make_schema()
    b = batch_of(schema)
    additive = build(schema).eval()(b).logits
    multiplicative = build(schema, mask="multiplicative").eval()(b).logits
    assert not torch.allclose(additive, multiplicative)
    assert SPEC.defaults["mask"] == "additive"
    with pytest.raises(ValueError, match="mask must be one of"):
        build(schema, mask="both")
