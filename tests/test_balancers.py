"""Loss balancers: the built-in methods' maths, the conformance suite, the run options."""

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_run_args
from hypothesis import given
from hypothesis import strategies as st
from mssbench_balancers.methods import GradNorm, PCGrad, Uncertainty, project_conflicting

import mssbench
from mssbench.balancing import (
    DEFAULT_BALANCER,
    WeightedSum,
    balancer_label,
    check_distributed,
    resolve_balancer,
)
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.plugins import load_registry
from mssbench.runners.trainer import task_weights, training_loss
from mssbench.testing import check_balancer, default_schema
from mssbench.testing.balancer_checks import _data, _Toy

BUILT_IN = ("fixed", "uncertainty", "gradnorm", "pcgrad")
REGISTRY = load_registry()

finite = st.floats(-100, 100, allow_nan=False, width=32)


@given(st.integers(1, 6).flatmap(lambda d: st.lists(finite, min_size=2 * d, max_size=2 * d)))
def test_pcgrad_projected_gradients_do_not_conflict(values):
    g = torch.tensor(values, dtype=torch.float64).view(2, -1)
    out = project_conflicting(g, [[1], [0]])
    tol = 1e-9 * (1 + g.abs().max().item() ** 2)
    assert out[0] @ g[1] >= -tol
    assert out[1] @ g[0] >= -tol
    if g[0] @ g[1] >= 0:  # no conflict: nothing changes
        assert torch.equal(out, g)


def test_pcgrad_projects_only_the_shared_parameters():
    torch.manual_seed(0)
    model = _Toy(2)
    x, y = _data(2)
    params = list(model.parameters())
    PCGrad(2, torch.ones(2)).backward(model.losses(x, y), params)
    heads = [p.grad.clone() for p in model.heads.parameters()]
    for p in params:
        p.grad = None
    model.losses(x, y).sum().backward()  # a task-specific head gets its own task's gradient
    assert all(torch.allclose(a, p.grad) for a, p in zip(heads, model.heads.parameters()))


def test_gradnorm_weights_sum_to_the_number_of_tasks_and_move():
    torch.manual_seed(0)
    model = _Toy(3)
    x, y = _data(3)
    y[:, 2] = (x[:, 0] > 1.5).float()  # a slower, rarer task
    balancer = GradNorm(3, torch.ones(3), alpha=1.5)
    opt = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        balancer.backward(model.losses(x, y), list(model.parameters()))
        opt.step()
        assert balancer.task_weights().sum().item() == pytest.approx(3.0, abs=1e-5)
    assert (balancer.task_weights() > 0).all()
    assert not torch.allclose(balancer.task_weights(), torch.ones(3), atol=1e-2)


def test_gradnorm_rejects_negative_alpha():
    with pytest.raises(ConfigError, match="alpha must be >= 0"):
        resolve_and_build("gradnorm", {"alpha": "-1"})


def test_uncertainty_learns_its_log_variances():
    torch.manual_seed(0)
    model = _Toy(2)
    x, y = _data(2)
    balancer = Uncertainty(2, torch.ones(2), init_log_var=0.0)
    opt = torch.optim.Adam([*model.parameters(), *balancer.parameters()], lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        balancer.backward(model.losses(x, y), list(model.parameters()))
        opt.step()
    log_vars = balancer.module.log_vars.detach()
    assert (log_vars.abs() > 0.05).all(), log_vars
    # They move towards the optimum of exp(-s) L + s / 2, s = log(2 L).
    optimum = torch.log(2 * model.losses(x, y).detach())
    assert ((log_vars - optimum).abs() < optimum.abs()).all(), (log_vars, optimum)


def test_fixed_is_todays_loss_bit_for_bit():
    from mssbench.runners.trainer import task_losses
    from mssbench.spec import resolve_aux_loss
    from mssbench.testing.checks import _batch

    schema = default_schema()
    spec = REGISTRY.model("mmoe")
    batch = _batch(schema, 64)
    grads = []
    for use_balancer in (False, True):
        torch.manual_seed(0)
        model = spec.build(schema, **spec.defaults)
        logits, aux = model(batch)
        weights = task_weights(model, schema.n_tasks, torch.device("cpu"))
        if use_balancer:
            balancer = resolve_and_build("fixed", {}, weights)
            aux_loss = resolve_aux_loss(aux, batch.labels).float()
            loss = balancer.backward(task_losses(logits, batch.labels), [], aux_loss)
        else:
            loss = training_loss(logits, aux, batch.labels, weights)
            loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))


def test_the_trainer_trains_on_the_task_weights_it_is_given():
    from mssbench.runners.trainer import fit
    from mssbench.testing.synthetic import make_dataset

    data = make_dataset(n_train=300, n_valid=100, n_test=100, seed=0)
    spec = REGISTRY.model("mmoe")
    losses = []
    for weights in (None, torch.ones(data.schema.n_tasks), torch.zeros(data.schema.n_tasks)):
        torch.manual_seed(0)
        model = spec.build(data.schema, **{**spec.defaults, **spec.check_params})
        state = fit(
            model,
            data.schema,
            data.train,
            data.valid,
            model_name="mmoe",
            device=torch.device("cpu"),
            seed=1,
            epochs=1,
            batch_size=64,
            eval_batch_size=256,
            lr=1e-3,
            weight_decay=0.0,
            patience=5,
            progress=False,
            log=lambda _line: None,
            task_weights=weights,
        ).state
        losses.append(state.history[0]["train_loss"])
    assert losses[0] == losses[1] > 0  # resolved from the model (ones) or given: the same
    assert losses[2] == 0.0  # mmoe has no auxiliary loss


def test_fixed_run_gives_the_numbers_of_a_run_without_balancer(tmp_path):
    records = []
    for extra in ((), ("--balancer", "fixed")):
        out = tmp_path / str(len(records))
        result = CliRunner().invoke(main, tiny_run_args(out, 2, *extra, "--no-progress"))
        assert result.exit_code == 0, result.output
        (path,) = out.glob("*.json")
        records.append(json.loads(path.read_text()))
    assert records[0]["run_hash"] == records[1]["run_hash"]
    assert records[0]["test"]["summary"] == records[1]["test"]["summary"]
    losses = [[h["train_loss"] for h in r["training"]["history"]] for r in records]
    assert losses[0] == losses[1]


def resolve_and_build(name, given, weights=None):
    from mssbench.balancing import build_balancer

    spec, params = resolve_balancer(REGISTRY, name, given, distributed=False, step="eager")
    weights = torch.ones(2) if weights is None else weights
    return build_balancer(spec, len(weights), weights, params)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_balancers_pass_the_conformance_suite(name):
    check_balancer(REGISTRY.balancer(name))


def test_default_balancer_keeps_run_hashes():
    base = RunConfig(model="mmoe", dataset="census-income")
    assert RunConfig(model="mmoe", dataset="census-income", balancer="fixed").result_hash() == (
        base.result_hash()
    )
    assert "balancer" not in json.dumps(base.result_hash())
    other = RunConfig(model="mmoe", dataset="census-income", balancer="pcgrad")
    tuned = RunConfig(
        model="mmoe", dataset="census-income", balancer="gradnorm", balancer_params=["alpha=1"]
    )
    assert len({base.result_hash(), other.result_hash(), tuned.result_hash()}) == 3
    assert tuned.balancer_params == {"alpha": "1"}


def test_bad_balancer_options_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown balancer 'pcgard'.*Did you mean 'pcgrad'"):
        resolve_balancer(REGISTRY, "pcgard", {}, distributed=False, step="eager")
    with pytest.raises(ConfigError, match="takes no balancer param 'alfa'.*'alpha'"):
        resolve_balancer(REGISTRY, "gradnorm", {"alfa": "1"}, distributed=False, step="eager")
    with pytest.raises(ConfigError, match="expects float"):
        resolve_balancer(REGISTRY, "gradnorm", {"alpha": "high"}, distributed=False, step="eager")
    with pytest.raises(ConfigError, match="--balancer pcgrad cannot train under torchrun"):
        resolve_balancer(REGISTRY, "pcgrad", {}, distributed=True, step="eager")
    with pytest.raises(ConfigError, match="needs --step eager"):
        resolve_balancer(REGISTRY, "uncertainty", {}, distributed=False, step="graph")
    with pytest.raises(ConfigError, match="--balancer-param expects KEY=VALUE"):
        RunConfig(model="m", dataset="d", balancer_params=["alpha"])


def test_ddp_support_is_declared():
    for name in ("fixed", "uncertainty"):
        check_distributed(REGISTRY.balancer(name), distributed=True)
    for name in ("gradnorm", "pcgrad"):
        assert REGISTRY.balancer(name).ddp_reason


def test_default_without_plugins_is_the_trainer_weighted_sum():
    bare = load_registry(autoload=False)
    assert resolve_balancer(bare, DEFAULT_BALANCER, {}, distributed=False, step="graph") == (
        None,
        {},
    )
    assert isinstance(WeightedSum(2, torch.ones(2)).to(torch.device("cpu")), WeightedSum)


def test_variant_label_names_a_balancer_other_than_the_default():
    assert balancer_label({}) == ""
    assert balancer_label({"balancer": "fixed", "balancer_params": {}}) == ""
    label = balancer_label({"balancer": "gradnorm", "balancer_params": {"alpha": 1.0}})
    assert label == "balancer=gradnorm(alpha=1.0)"


def test_plugins_command_lists_and_describes_balancers():
    result = CliRunner().invoke(main, ["plugins"])
    assert result.exit_code == 0, result.output
    for name in BUILT_IN:
        assert f"balancer  {name}" in result.output
    result = CliRunner().invoke(main, ["plugins", "gradnorm"])
    assert "alpha" in result.output and "under torchrun: no" in result.output


THIRD_PARTY = textwrap.dedent(
    """
    import torch
    from mssbench import hookimpl
    from mssbench.balancing import Balancer, BalancerSpec

    class Scaled(Balancer):
        def __init__(self, n_tasks, task_weights, scale):
            super().__init__()
            self.weights = task_weights * scale

        def to(self, device):
            self.weights = self.weights.to(device)
            return self

        def task_weights(self):
            return self.weights

        def backward(self, losses, shared_params, aux=None):
            loss = (losses * self.weights).sum() + (0 if aux is None else aux)
            loss.backward()
            return loss.detach()

    SPEC = BalancerSpec(
        name="scaled", summary="Task weights times a constant", factory=Scaled,
        params={"scale": 1.0}, paper="-",
    )

    @hookimpl
    def mssbench_register_balancers():
        return [SPEC]
    """
)


def test_third_party_balancer_from_a_plugin_file_end_to_end(tmp_path):
    plugin = tmp_path / "my_balancer.py"
    plugin.write_text(THIRD_PARTY)
    out = tmp_path / "runs"
    args = tiny_run_args(out, 1, "--plugin", str(plugin), "--balancer", "scaled")
    args += ["--balancer-param", "scale=0.5", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record["config"]["balancer"] == "scaled"
    assert record["training"]["balancer"]["params"] == {"scale": 0.5}
    assert record["training"]["balancer"]["task_weights"] == [0.5] * 2
    bad = CliRunner().invoke(main, [*args[:-1], "--balancer-param", "scale=big"])
    assert bad.exit_code != 0 and "expects float" in bad.output


@pytest.mark.parametrize("name", ["uncertainty", "pcgrad"])
def test_run_with_a_built_in_balancer_records_it(tmp_path, name):
    out = tmp_path / "runs"
    args = tiny_run_args(out, 2, "--balancer", name, "--no-progress")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record["training"]["balancer"]["name"] == name
    assert "balancer=" + name in balancer_label(record["config"])


def test_config_file_sets_the_balancer(tmp_path):
    from mssbench.configfile import read

    cfg = tmp_path / "run.yaml"
    cfg.write_text("balancer: gradnorm\nbalancer_params:\n  alpha: 0.5\n")
    values = read(cfg, "run", main.commands["run"])
    assert values == {"balancer": "gradnorm", "balancer_params": {"alpha": 0.5}}


class Interrupt:
    @mssbench.hookimpl
    def mssbench_epoch_end(self, run, epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt


def test_a_resumed_run_restores_the_learned_weights(registry, tmp_path):
    from conftest import SMALL_MMOE

    from mssbench.api import run

    def cfg(out, **kw):
        return RunConfig(
            model="mmoe", dataset="tiny-synth", params=dict(SMALL_MMOE), epochs=2,
            batch_size=256, patience=5, out=str(out), progress=False, balancer="uncertainty",
            **kw,
        )

    full = run(cfg(tmp_path / "full"), registry=registry, log=lambda _: None)
    registry.pm.register(Interrupt(), name="interrupt")
    with pytest.raises(KeyboardInterrupt):
        run(cfg(tmp_path / "cut"), registry=registry, log=lambda _: None)
    (checkpoint,) = (tmp_path / "cut" / ".partial").glob("*.pt")
    saved = torch.load(checkpoint, weights_only=True)["balancer"]["log_vars"]
    assert not torch.equal(saved, torch.zeros(2))  # learned during epoch 1, kept
    registry.pm.unregister(name="interrupt")
    resumed = run(cfg(tmp_path / "cut", resume=True), registry=registry, log=lambda _: None)
    weights = [r.record["training"]["balancer"]["task_weights"] for r in (full, resumed)]
    assert weights[0] == pytest.approx(weights[1])
    assert resumed.record["test"]["summary"] == pytest.approx(full.record["test"]["summary"])


def test_page_commands_rebuild_the_balancer_options(tmp_path):
    from mssbench.leaderboard import Defaults, run_command
    from mssbench.records import recomputed_run_hash
    from mssbench.reproduce import _options

    plugin = tmp_path / "my_balancer.py"
    plugin.write_text(THIRD_PARTY)
    out = tmp_path / "runs"
    args = tiny_run_args(out, 1, "--plugin", str(plugin), "--balancer", "scaled")
    result = CliRunner().invoke(main, [*args, "--balancer-param", "scale=0.5", "--no-progress"])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record["training"]["balancer"]["plugin"] == str(plugin)
    command = run_command(record, Defaults.from_registry(REGISTRY))
    assert f"--plugin {plugin}" in command
    assert "--balancer scaled --balancer-param scale=0.5" in command
    rest = ["--balancer", "scaled", "--balancer-param", "scale=0.5"]
    assert _options(rest) == {"balancer": "scaled", "balancer_params": {"scale": "0.5"}}
    assert record["run_hash"] in recomputed_run_hash(record)


def test_suite_refuses_an_unknown_balancer_before_running(tmp_path):
    result = CliRunner().invoke(
        main,
        ["suite", "--plugin", "mssbench.testing.plugin", "--models", "mmoe", "--datasets",
         "tiny-synth", "--seeds", "1", "--balancer", "gradnrom", "--out", str(tmp_path)],
    )
    assert result.exit_code != 0
    assert "unknown balancer 'gradnrom'" in result.output and "'gradnorm'" in result.output
    assert not list(tmp_path.glob("*.json"))


def test_check_command_runs_the_balancer_checks():
    result = CliRunner().invoke(main, ["check", "uncertainty"])
    assert result.exit_code == 0, result.output
    assert "uncertainty (balancer, plugin balancers)" in result.output
    assert "check_balancer_loss_falls" in result.output


def test_check_balancer_reports_a_broken_balancer():
    from mssbench.balancing import Balancer, BalancerSpec

    class ForgetsAux(Balancer):
        def __init__(self, n_tasks, task_weights):
            super().__init__()

        def task_weights(self):
            return torch.ones(2)

        def backward(self, losses, shared_params, aux=None):
            losses.sum().backward()
            return losses.sum().detach()

    spec = BalancerSpec(name="forgets_aux", summary="drops the aux loss", factory=ForgetsAux)
    with pytest.raises(AssertionError, match="check_balancer_adds_aux_loss"):
        check_balancer(spec)
