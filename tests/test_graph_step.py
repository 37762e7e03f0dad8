"""``--step graph``: the static-buffer training step (CUDA graph on a GPU, eager elsewhere)."""

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL_MMOE, tiny_run_args

from mssbench.api import build_model
from mssbench.cli import main
from mssbench.config import check_step
from mssbench.errors import ConfigError, TrainingError
from mssbench.runners.distributed import World
from mssbench.runners.graph_step import StaticStep, device_indices, gather_batch, unsafe_reasons
from mssbench.runners.trainer import fit
from mssbench.spec import ModelOutput
from mssbench.testing.synthetic import make_dataset

SMALL = {
    "mmoe": dict(SMALL_MMOE),
    "aesm": {"embed_dim": 4, "scenario_experts": 4, "scenario_expert_hidden": [8]},
    "supermoe": {"d_model": 8, "n_heads": 2, "n_experts": 4, "expert_hidden": [16]},
}


def quiet(_line: str) -> None:
    pass


def train(registry, name, data, step_mode, device="cpu", **options):
    torch.manual_seed(0)
    params = SMALL.get(name) or registry.model(name).check_params
    model = build_model(registry, name, data.schema, dict(params)).to(device)
    result = fit(
        model,
        data.schema,
        data.train,
        data.valid,
        model_name=name,
        device=torch.device(device),
        seed=1,
        epochs=2,
        batch_size=64,
        eval_batch_size=256,
        lr=1e-3,
        weight_decay=0.0,
        patience=5,
        progress=False,
        log=quiet,
        step_mode=step_mode,
        **options,
    )
    return model, result.state


@pytest.mark.parametrize("name", ["mmoe", "aesm", "supermoe"])
@pytest.mark.parametrize("scenario_pure", [False, True])
def test_static_step_trains_bit_identically_to_the_eager_loop(registry, name, scenario_pure):
    """Same batches, losses and weights, partial batches included (700 rows, batch 64)."""
    data = make_dataset(n_train=700, n_valid=100, n_test=20)
    eager, s_eager = train(registry, name, data, "eager", scenario_pure=scenario_pure)
    static, s_static = train(registry, name, data, "graph", scenario_pure=scenario_pure)
    assert [h["train_loss"] for h in s_static.history] == [h["train_loss"] for h in s_eager.history]
    assert s_static.train_samples == s_eager.train_samples == 2 * 700
    for key, value in eager.state_dict().items():
        assert torch.equal(value, static.state_dict()[key]), key


class _Counting(StaticStep):
    """Records the rows every step trains on."""

    seen: list

    def _step(self, index):
        self.seen.append(index.clone())
        super()._step(index)


def test_every_row_is_trained_once_per_epoch_and_partial_batches_run_eagerly(registry):
    data = make_dataset(n_train=300, n_valid=50, n_test=20)
    model = build_model(registry, "mmoe", data.schema, dict(SMALL_MMOE))
    optimizer = torch.optim.Adam(model.parameters())

    def loss_fn(batch):
        logits, aux = model(batch)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels) + aux

    step = _Counting(model, optimizer, data.train, 64, loss_fn, "mmoe")
    step.seen = []
    batches = list(torch.randperm(300).split(64))  # 4 full batches and one of 44 rows
    for rows in device_indices(batches, torch.device("cpu")):
        step.run(rows)
    assert torch.equal(torch.cat(step.seen).sort().values, torch.arange(300))
    assert [len(s) for s in step.seen] == [64, 64, 64, 64, 44]
    assert step.eager_steps == 5  # on the CPU every step runs eagerly
    assert bool(step.finite) and float(step.loss_sum) > 0


def test_gathered_batch_equals_split_batch():
    data = make_dataset(n_train=100, n_valid=10, n_test=10)
    index = torch.tensor([5, 0, 99, 5, 42])
    for a, b in zip(gather_batch(data.train, index), data.train.batch(index)):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_step_option_is_checked():
    with pytest.raises(ConfigError, match="--step must be one of eager, graph"):
        check_step("graphs", distributed=False, compiled=False)
    with pytest.raises(ConfigError, match="torchrun"):
        check_step("graph", distributed=True, compiled=False)
    with pytest.raises(ConfigError, match="--compile"):
        check_step("graph", distributed=False, compiled=True)
    check_step("graph", distributed=False, compiled=False)
    check_step("eager", distributed=True, compiled=True)


def test_graph_step_refuses_data_parallel_runs(registry):
    data = make_dataset(n_train=100, n_valid=20, n_test=10)
    with pytest.raises(ConfigError, match="torchrun"):
        train(registry, "mmoe", data, "graph", world=World(rank=0, size=2, local_rank=0))


def test_run_records_the_step_and_hashes_it_apart(tmp_path):
    """``--step graph`` is recorded, reruns with it, and is not confused with an eager run."""
    out = tmp_path / "runs"
    for extra in ((), ("--step", "graph")):
        res = CliRunner().invoke(main, tiny_run_args(out, 1, *extra), catch_exceptions=False)
        assert res.exit_code == 0, res.output
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert sorted(r["config"]["step"] for r in records) == ["eager", "graph"]
    assert len({r["run_hash"] for r in records}) == 2
    res = CliRunner().invoke(main, tiny_run_args(out, 1, "--step", "graph", "--compile"))
    assert res.exit_code != 0 and "choose one of them" in res.output


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["mmoe", "aesm", "dephn", "supermoe"])
def test_cuda_graph_trains_like_eager_steps(registry, name):
    """Replays give the eager losses and weights (dropout and router noise included).

    Not bit for bit: embedding and index backward kernels add with atomics on a GPU, so even
    two eager runs differ in the last bits.
    """
    data = make_dataset(n_train=700, n_valid=100, n_test=20)
    eager, s_eager = train(registry, name, data, "eager", device="cuda")
    graph, s_graph = train(registry, name, data, "graph", device="cuda")
    assert s_graph.train_samples == s_eager.train_samples == 2 * 700
    for a, b in zip(s_eager.history, s_graph.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    for key, value in eager.state_dict().items():
        other = graph.state_dict()[key]
        if value.is_floating_point():
            gap = (other - value).norm() / value.norm().clamp_min(1e-6)
            assert gap < 1e-2, (key, float(gap))
        else:
            assert torch.equal(other, value), key


@pytest.mark.gpu
@needs_cuda
def test_dropout_in_graph_replays_draws_the_eager_masks():
    """Graph-safe Philox RNG: each replay draws fresh masks, the same as eager calls would."""
    x = torch.ones(4096, device="cuda")
    torch.manual_seed(0)
    eager = [torch.nn.functional.dropout(x, 0.5) for _ in range(3)]
    torch.manual_seed(0)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static = torch.nn.functional.dropout(x, 0.5)
    replays = []
    for _ in range(3):
        graph.replay()
        replays.append(static.clone())
    assert not torch.equal(replays[0], replays[1])
    for e, r in zip(eager, replays):
        assert torch.equal(e, r)


class _HostSync(torch.nn.Module):
    def __init__(self, schema):
        super().__init__()
        self.head = torch.nn.Linear(schema.n_numeric, schema.n_tasks)

    def forward(self, batch):
        logits = self.head(batch.numeric)
        if float(logits.sum()) > 1e30:  # a host synchronisation: cannot be captured
            logits = logits * 0
        return ModelOutput(logits, logits.new_zeros(()))


@pytest.mark.gpu
@needs_cuda
def test_a_model_that_synchronises_with_the_host_is_refused_clearly():
    data = make_dataset(n_train=300, n_valid=50, n_test=20)
    model = _HostSync(data.schema).cuda()
    with pytest.raises(TrainingError, match="cannot be captured in a CUDA graph.*--step eager"):
        fit(
            model,
            data.schema,
            data.train,
            data.valid,
            model_name="host-sync",
            device=torch.device("cuda"),
            seed=0,
            epochs=1,
            batch_size=64,
            eval_batch_size=256,
            lr=1e-3,
            weight_decay=0.0,
            patience=1,
            progress=False,
            log=quiet,
            step_mode="graph",
        )


@pytest.mark.parametrize(
    ("name", "params", "unsafe"),
    [
        ("mmoe", {}, False),
        ("aesm", {}, False),
        ("dephn", {}, False),
        ("supermoe", {}, False),
        ("star", {}, True),
        ("single_task", {"scenario_towers": True}, True),
    ],
)
def test_models_that_cannot_be_captured_say_why_and_are_refused(registry, name, params, unsafe):
    data = make_dataset(n_train=100, n_valid=10, n_test=10)
    spec_small = dict(registry.model(name).check_params)
    model = build_model(registry, name, data.schema, {**spec_small, **params})
    assert bool(unsafe_reasons(model)) == unsafe
    step = StaticStep(model, torch.optim.Adam(model.parameters()), data.train, 8, None, name)
    if unsafe:
        with pytest.raises(TrainingError, match=f"model '{name}' cannot be captured.*--step eager"):
            step.capture()


def test_supermoe_loop_dispatch_is_declared_unsafe(registry):
    data = make_dataset(n_train=100, n_valid=10, n_test=10)
    model = build_model(registry, "supermoe", data.schema, dict(SMALL["supermoe"]))
    assert unsafe_reasons(model) == []
    for module in model.modules():
        if hasattr(module, "dispatch"):
            module.dispatch = "loop"
    assert unsafe_reasons(model) == [
        "MoEFFN: dispatch 'loop' reads the per-expert token counts on the host"
    ]
