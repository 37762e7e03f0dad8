"""STAR (Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender for
Multi-Domain CTR Prediction", CIKM 2021, arXiv:2101.11427; plugins/mssbench_star/README.md)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from mssbench_star import DEFAULTS, mssbench_register_models
from mssbench_star.model import STAR, PartitionedNorm

import mssbench.testing.plugin as testing_plugin
from mssbench.api import run
from mssbench.config import RunConfig
from mssbench.plugins import load_registry
from mssbench.runners.trainer import batch_indices
from mssbench.spec import Batch
from mssbench.testing import make_schema
from mssbench.testing.synthetic import make_split

SCHEMA = make_schema()  # 3 scenarios, tasks ctr and ctcvr
S = SCHEMA.n_scenarios
SMALL = {"embed_dim": 4, "hidden": [16, 8], "aux_hidden": [8]}


def assert_close(a, b, atol=1e-5):
    # torch.testing.assert_close imports torch.distributed on first use: seconds on a busy CPU.
    assert a.shape == b.shape, f"shapes {list(a.shape)} and {list(b.shape)}"
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert diff <= atol, f"max abs difference {diff:.3g} > {atol}"


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return STAR(SCHEMA, **{**DEFAULTS, **SMALL, **overrides})


def batch(n, seed=1, scenario=None):
    b = make_split(SCHEMA, n, seed=seed).batch(slice(0, n))
    if scenario is not None:
        scen = torch.as_tensor(scenario, dtype=torch.long).expand(n).clone()
        b = Batch(b.categorical, b.numeric, scen, b.labels)
    return b


def step(model, b, lr=1e-2):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    logits, aux = model(b)
    loss = F.binary_cross_entropy_with_logits(logits, b.labels) + aux
    opt.zero_grad()
    loss.backward()
    opt.step()


def randomise_pn(pn, seed=0):
    """Give PN's parameters and running statistics distinct per-domain values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in (pn.weight, pn.bias, pn.domain_weight, pn.domain_bias, pn.running_mean):
            t.copy_(torch.randn(t.shape, generator=g))
        pn.running_var.copy_(torch.rand(pn.running_var.shape, generator=g) + 0.5)


def test_spec_declares_faithful_batching_and_defaults():
    [spec] = mssbench_register_models()
    assert spec.tags["batching"] == "scenario_pure"
    assert spec.tags["scenario_handling"]
    assert spec.defaults["embed_dim"] == 16
    assert spec.defaults["hidden"] == [256, 128, 64]
    assert spec.defaults["aux_hidden"] == [64]
    assert 0.0 <= spec.defaults["dropout"] <= 0.2
    assert spec.defaults["pn_momentum"] == 0.1


def test_per_domain_parameters_are_registered_and_all_trained():
    """P-S1: stacked per-domain tensors, each domain's slice gets a gradient."""
    model = build().train()
    state = model.state_dict()
    per_domain = [k for k in state if "domain_" in k or k.startswith("norm.running_")]
    per_domain.append("scenario_embedding")
    for key in per_domain:
        assert state[key].shape[0] == S, key
    b = batch(256)
    logits, aux = model(b)
    (F.binary_cross_entropy_with_logits(logits, b.labels) + aux).backward()
    for name, p in model.named_parameters():
        if "domain_" in name or name == "scenario_embedding":
            for s in range(S):
                assert p.grad[s].abs().sum() > 0, f"{name}[{s}] has no gradient"


def test_init_every_domain_gives_the_same_main_output():
    """Item 1 and P-S4: domain weights 1, biases 0, equal running stats at init."""
    model = build()
    b = batch(32)
    for mode in ("eval", "train"):
        getattr(model, mode)()
        mains = []
        for s in range(S):
            pure = Batch(b.categorical, b.numeric, torch.full_like(b.scenario, s), b.labels)
            with torch.no_grad():
                mains.append(model.main_logits(pure))
                full = model(pure).logits
            # The whole difference between domains is the auxiliary logit.
            aux = model.aux_logits(pure.scenario)
            assert_close(full, mains[-1] + aux)
        for s in range(1, S):
            assert_close(mains[s], mains[0], atol=1e-6)
    assert mains[0].std() > 1e-3, "outputs collapse: shared-times-domain weights too small"


def test_domains_diverge_after_training_on_one_domain():
    """The domain weights are live: training on domain 0 only separates it from domain 1."""
    model = build().train()
    b0 = batch(64, scenario=0)
    for _ in range(3):
        step(model, b0, lr=0.1)
    model.eval()
    probe = batch(16, seed=2)
    with torch.no_grad():
        out = [
            model.main_logits(Batch(*probe[:2], torch.full_like(probe.scenario, s), probe.labels))
            for s in range(S)
        ]
    assert (out[0] - out[1]).abs().max() > 1e-3
    assert_close(out[1], out[2])  # untouched domains stay identical


def test_pn_eval_output_does_not_depend_on_the_batch():
    """Item 2: eval-mode PN uses the row's own domain's running statistics only."""
    pn = PartitionedNorm(S, 6)
    randomise_pn(pn)
    pn.eval()
    z = torch.randn(20, 6)
    d = torch.arange(20) % S
    full = pn(z, d)
    assert_close(pn(z[:5], d[:5]), full[:5])
    for i in (0, 7, 19):
        assert_close(pn(z[i : i + 1], d[i : i + 1]), full[i : i + 1])
    # ... and the statistics used are the row's domain's.
    expected = (z - pn.running_mean[d]) / torch.sqrt(pn.running_var[d] + pn.eps)
    expected = expected * (pn.weight * pn.domain_weight[d]) + (pn.bias + pn.domain_bias[d])
    assert_close(full, expected)
    # Moving a row to another domain changes its output.
    assert not torch.allclose(pn(z[:1], torch.tensor([1])), pn(z[:1], torch.tensor([2])))


def test_model_eval_output_does_not_depend_on_the_batch():
    model = build()
    for _ in range(3):  # distinct per-domain running statistics
        step(model.train(), batch(96, seed=4))
    model.eval()
    b = batch(30)
    with torch.no_grad():
        full = model(b).logits
        for i in (0, 11):
            one = model(Batch(*(t[i : i + 1] for t in b))).logits
            assert_close(one, full[i : i + 1])


def test_star_resolves_to_scenario_pure_batches():
    """Item 3: the runner's scenario-pure sampler, as STAR uses it."""
    g = torch.Generator().manual_seed(0)
    scenario = torch.tensor([0] * 300 + [1] * 90 + [2] * 7 + [3] * 1)
    batches = batch_indices(len(scenario), 32, g, scenario, 4)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(len(scenario)))
    kinds = [int(scenario[b][0]) for b in batches]
    for b in batches:
        assert scenario[b].unique().numel() == 1
    # Batch order is shuffled across scenarios, not one scenario after another.
    runs = 1 + sum(a != b for a, b in zip(kinds, kinds[1:]))
    assert runs > 4


def test_run_records_batching(tmp_path):
    registry = load_registry(extra=[("mssbench-testing", testing_plugin)])
    params = {"embed_dim": "4", "hidden": "16,8", "aux_hidden": "8"}
    for batching, expected in (("auto", "scenario_pure"), ("mixed", "mixed")):
        cfg = RunConfig(
            model="star",
            dataset="tiny-synth",
            params=params,
            epochs=1,
            batch_size=128,
            batching=batching,
            max_steps_per_epoch=3,
            out=str(tmp_path),
            progress=False,
        )
        res = run(cfg, registry=registry, log=lambda _m: None)
        assert res.record["config"]["batching"] == expected


def reference_pn(pn, z, p):
    """The paper's PN on a domain-``p`` batch: batch moments, (γ⊙γ_p), (β+β_p)."""
    mean, var = pn.running_mean[p].clone(), pn.running_var[p].clone()
    z_hat = F.batch_norm(z, mean, var, training=True, momentum=pn.momentum, eps=pn.eps)
    out = z_hat * (pn.weight * pn.domain_weight[p]) + (pn.bias + pn.domain_bias[p])
    return out, mean, var


def test_single_domain_batch_is_the_papers_pn():
    """Item 4: on a one-domain batch, PN is BN with domain moments and composed affine."""
    pn = PartitionedNorm(S, 6).train()
    randomise_pn(pn)
    z = torch.randn(40, 6) * 3 + 1
    before_mean, before_var = pn.running_mean.clone(), pn.running_var.clone()
    ref, ref_mean, ref_var = reference_pn(pn, z, 1)
    out = pn(z, torch.full((40,), 1))
    assert_close(out, ref)
    assert_close(pn.running_mean[1], ref_mean)
    assert_close(pn.running_var[1], ref_var)
    for p in (0, 2):
        assert torch.equal(pn.running_mean[p], before_mean[p])
        assert torch.equal(pn.running_var[p], before_var[p])


def test_mixed_batch_normalises_each_domain_as_its_own_pure_batch():
    """Item 4, mixed mode: each domain's rows and statistics match a pure batch of them."""
    pn = PartitionedNorm(S, 6).train()
    randomise_pn(pn)
    pure = copy.deepcopy(pn)
    z = torch.randn(60, 6) * 2
    d = torch.randint(0, S, (60,), generator=torch.Generator().manual_seed(0))
    out = pn(z, d)
    for p in range(S):
        rows = d == p
        assert_close(out[rows], pure(z[rows], d[rows]))
    assert_close(pn.running_mean, pure.running_mean)
    assert_close(pn.running_var, pure.running_var)


def test_model_trains_each_domain_of_a_mixed_batch_as_a_pure_batch():
    """Item 4 through the whole model: mixed-mode training equals domain-pure training."""
    model = build().train()
    randomise_pn(model.norm)
    pure = copy.deepcopy(model)
    b = batch(48)
    with torch.no_grad():
        mixed = model.main_logits(b)
        for p in range(S):
            rows = b.scenario == p
            assert_close(mixed[rows], pure.main_logits(Batch(*(t[rows] for t in b))))
    assert_close(model.norm.running_mean, pure.norm.running_mean)
    assert_close(model.norm.running_var, pure.norm.running_var)


def test_absent_domain_keeps_stats_and_one_row_domain_uses_running_stats():
    """Item 5 and P-S3."""
    pn = PartitionedNorm(S, 6).train()
    randomise_pn(pn)
    before_mean, before_var = pn.running_mean.clone(), pn.running_var.clone()
    z = torch.randn(9, 6, requires_grad=True)
    d = torch.tensor([0] * 8 + [1])  # domain 0: 8 rows, domain 1: one row, domain 2: absent
    out = pn(z, d)
    assert torch.isfinite(out).all()
    assert torch.isfinite(pn.running_mean).all() and torch.isfinite(pn.running_var).all()
    for p in (1, 2):
        assert torch.equal(pn.running_mean[p], before_mean[p])
        assert torch.equal(pn.running_var[p], before_var[p])
    assert not torch.equal(pn.running_mean[0], before_mean[0])
    m = pn.momentum
    assert_close(pn.running_mean[0], (1 - m) * before_mean[0] + m * z[:8].mean(0))
    assert_close(pn.running_var[0], (1 - m) * before_var[0] + m * z[:8].var(0))
    one = (z[8] - before_mean[1]) / torch.sqrt(before_var[1] + pn.eps)
    one = one * (pn.weight * pn.domain_weight[1]) + (pn.bias + pn.domain_bias[1])
    assert_close(out[8], one)
    out.sum().backward()
    assert torch.isfinite(z.grad).all()


def test_one_row_training_batch_works_in_the_model():
    model = build().train()
    with torch.no_grad():
        running = model.norm.running_mean.clone()
        logits, _ = model(batch(1))
    assert torch.isfinite(logits).all()
    assert torch.equal(model.norm.running_mean, running)


def test_zero_auxiliary_output_leaves_the_main_logit():
    """Item 6 and P-S2: no activation on the main logit; aux_loss is 0."""
    model = build().eval()
    with torch.no_grad():
        model.aux.head.weight.zero_()
        model.aux.head.bias.zero_()
    b = batch(64)
    with torch.no_grad():
        logits, aux_loss = model(b)
        main = model.main_logits(b)
    assert torch.equal(logits, main)
    assert aux_loss.dim() == 0 and aux_loss.item() == 0.0
    assert (main < 0).any() and (main > 0).any(), "main logit cannot change sign"
    no_aux = build(auxiliary=False).eval()
    with torch.no_grad():
        assert_close(no_aux(b).logits, no_aux.main_logits(b))


def test_auxiliary_logit_depends_on_the_scenario_only():
    model = build().eval()
    b = batch(30)
    with torch.no_grad():
        aux = model.aux_logits(b.scenario)
        table = model.aux(model.scenario_embedding).squeeze(-1)
    assert aux.shape == (30, SCHEMA.n_tasks)
    assert_close(aux, table[b.scenario])
    assert not torch.allclose(table[0], table[1])


@pytest.mark.parametrize("absent", [0, 2])
def test_domain_parameters_get_no_gradient_from_other_domains(absent):
    """Item 7: a batch without domain-p rows leaves every domain-p parameter's gradient 0."""
    model = build().train()
    b = batch(96)
    present = torch.tensor([s for s in range(S) if s != absent])
    scen = present[torch.arange(96) % len(present)]
    b = Batch(b.categorical, b.numeric, scen, b.labels)
    logits, aux = model(b)
    (F.binary_cross_entropy_with_logits(logits, b.labels) + aux).backward()
    checked = 0
    for name, p in model.named_parameters():
        if "domain_" in name or name == "scenario_embedding":
            assert p.grad is None or torch.count_nonzero(p.grad[absent]) == 0, name
            assert p.grad[int(present[0])].abs().sum() > 0, name
            checked += 1
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"shared {name} untrained"
    assert checked == 2 + 2 * len(model.layers) + 1


def test_unseen_scenario_is_an_informative_error():
    model = build().eval()
    b = batch(4, scenario=S)
    with pytest.raises(ValueError, match=r"scenario ids \[3\] outside \[0, 3\)"):
        model(b)


def test_build_rejects_bad_values():
    with pytest.raises(ValueError, match="dropout"):
        build(dropout=1.5)
    with pytest.raises(ValueError, match="hidden"):
        build(hidden=[16, 0])
    with pytest.raises(TypeError):
        build(not_a_param=1)
