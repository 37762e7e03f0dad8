import dataclasses
import json
import math

import pytest
import torch
from conftest import SMALL_MMOE
from hypothesis import given
from hypothesis import strategies as st

import mssbench
from mssbench.api import run
from mssbench.config import RunConfig
from mssbench.errors import ConfigError, TrainingError
from mssbench.leaderboard.labels import hardware_label
from mssbench.records import RunRecord
from mssbench.repeat import other_hardware
from mssbench.runners.trainer import batch_indices, resolve_device


def config(runs_dir, **kw):
    base = dict(
        model="mmoe",
        dataset="tiny-synth",
        params=dict(SMALL_MMOE),
        epochs=3,
        batch_size=256,
        patience=5,
        out=str(runs_dir),
        progress=False,
    )
    base.update(kw)
    return RunConfig(**base)


def quiet(_msg):
    pass


@given(n=st.integers(1, 300), bs=st.integers(2, 64), seed=st.integers(0, 2**31 - 1))
def test_mixed_batches_cover_every_row_once(n, bs, seed):
    batches = batch_indices(n, bs, torch.Generator().manual_seed(seed))
    rows = torch.cat(batches).sort().values
    assert torch.equal(rows, torch.arange(n))
    if n > 1:
        assert all(len(b) >= 2 for b in batches)
    assert all(len(b) <= bs + 1 for b in batches)


@given(
    scen=st.lists(st.integers(0, 3), min_size=1, max_size=300),
    bs=st.integers(2, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_scenario_pure_batches_hold_one_scenario(scen, bs, seed):
    scenario = torch.tensor(scen)
    batches = batch_indices(len(scen), bs, torch.Generator().manual_seed(seed), scenario, 4)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(len(scen)))
    for b in batches:
        assert scenario[b].unique().numel() == 1


def test_batches_are_deterministic_in_the_seed():
    a = batch_indices(100, 16, torch.Generator().manual_seed(3))
    b = batch_indices(100, 16, torch.Generator().manual_seed(3))
    c = batch_indices(100, 16, torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_same_seed_gives_identical_metrics(registry, runs_dir):
    a = run(config(runs_dir, seed=5), registry=registry, log=quiet)
    b = run(config(runs_dir, seed=5), registry=registry, log=quiet)
    c = run(config(runs_dir, seed=6), registry=registry, log=quiet)
    assert a.path != b.path  # never overwritten
    va, vb, vc = (r.test_metrics["value"].tolist() for r in (a, b, c))
    assert va == vb or all(math.isnan(x) and math.isnan(y) or x == y for x, y in zip(va, vb))
    assert va != vc


def test_model_learns_planted_signal(registry, runs_dir):
    res = run(config(runs_dir, epochs=8), registry=registry, log=quiet)
    s = res.record["test"]["summary"]
    assert s["auc/ctr"] > 0.7 and s["auc/ctcvr"] > 0.7


def test_early_stopping_restores_best_epoch(registry, runs_dir):
    # A huge learning rate makes validation degrade after the first epochs.
    res = run(config(runs_dir, epochs=30, patience=2, lr=0.3), registry=registry, log=quiet)
    tr = res.record["training"]
    assert tr["stopped_early"] and tr["epochs_run"] < 30
    assert tr["epochs_run"] == tr["best_epoch"] + 2
    scores = [h["selection_score"] for h in tr["history"]]
    assert tr["best_selection_score"] == max(scores)
    assert scores.index(max(scores)) + 1 == tr["best_epoch"]


class Interrupt:
    def __init__(self, at):
        self.at = at

    @mssbench.hookimpl
    def mssbench_epoch_end(self, run, epoch, metrics):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_resume_continues_and_matches_uninterrupted(registry, runs_dir, tmp_path):
    full = run(config(tmp_path / "full", epochs=4), registry=registry, log=quiet)
    registry.pm.register(Interrupt(2), name="interrupt")
    with pytest.raises(KeyboardInterrupt):
        run(config(runs_dir, epochs=4), registry=registry, log=quiet)
    assert not list(runs_dir.glob("*.json"))  # nothing half-written
    assert list((runs_dir / ".partial").glob("*.pt"))
    registry.pm.unregister(name="interrupt")
    logs = []
    resumed = run(config(runs_dir, epochs=4, resume=True), registry=registry, log=logs.append)
    assert any("Resuming" in m and "after epoch 2" in m for m in logs)
    assert [h["epoch"] for h in resumed.record["training"]["history"]] == [1, 2, 3, 4]
    assert resumed.test_metrics["value"].tolist() == pytest.approx(
        full.test_metrics["value"].tolist(), nan_ok=True
    )
    assert not list((runs_dir / ".partial").glob("*.pt"))  # cleaned up when finished


def _checkpoint_after_epoch_one(registry, runs_dir):
    """A two-epoch run interrupted after its first epoch: its checkpoint's path and contents."""
    registry.pm.register(Interrupt(1), name="interrupt")
    with pytest.raises(KeyboardInterrupt):
        run(config(runs_dir, epochs=2), registry=registry, log=quiet)
    registry.pm.unregister(name="interrupt")
    [path] = (runs_dir / ".partial").glob("*.pt")
    return path, torch.load(path, weights_only=True)


def test_a_run_resumed_on_another_machine_says_so_and_is_not_repeated_bit_for_bit(
    registry, runs_dir
):
    path, ck = _checkpoint_after_epoch_one(registry, runs_dir)
    [first] = ck["state"]["processes"]
    assert (first["first_epoch"], first["last_epoch"]) == (1, 1)
    first["hardware"] = {**first["hardware"], "cpu": "Another CPU", "cpu_id": {"model": "99"}}
    torch.save(ck, path)  # as if the checkpoint had been carried from another machine
    resumed = run(config(runs_dir, epochs=2, resume=True), registry=registry, log=quiet).record
    processes = resumed["training"]["processes"]
    assert [(p["first_epoch"], p["last_epoch"]) for p in processes] == [(1, 1), (2, 2)]
    assert processes[1]["hardware"] == resumed["environment"]["hardware"]
    label = hardware_label(resumed)
    assert label.startswith("cpu, Another CPU") and "(epochs 1-1), then cpu, " in label
    assert label.endswith("(epochs 2-2)")
    why = other_hardware(resumed, torch.device("cpu"))
    assert why.startswith("trained on 2 machines (epochs 1-1 on Another CPU; epochs 2-2 on ")
    RunRecord.model_validate(resumed)  # the record's schema knows the block


def test_a_checkpoint_from_before_processes_were_listed_names_its_epochs_of_unknown_origin(
    registry, runs_dir
):
    path, ck = _checkpoint_after_epoch_one(registry, runs_dir)
    del ck["state"]["processes"]
    torch.save(ck, path)
    resumed = run(config(runs_dir, epochs=2, resume=True), registry=registry, log=quiet).record
    first, second = resumed["training"]["processes"]
    assert (first["first_epoch"], first["last_epoch"], first["hardware"]) == (1, 1, None)
    assert hardware_label(resumed).startswith("unknown hardware (epochs 1-1), then cpu, ")
    assert "epochs 1-1 on unknown hardware" in other_hardware(resumed, torch.device("cpu"))


def test_a_run_trained_by_one_process_names_no_processes(registry, runs_dir):
    rec = run(config(runs_dir, epochs=1), registry=registry, log=quiet).record
    assert "processes" not in rec["training"]
    assert other_hardware(rec, torch.device("cpu")) is None


class DenormalProbe:
    """Records, at each epoch's end, what 1e-39 (a denormal float) times one gives."""

    def __init__(self):
        self.seen = []

    @mssbench.hookimpl
    def mssbench_epoch_end(self, run, epoch, metrics):
        self.seen.append((torch.tensor([1e-39]) * 1.0).item())


def test_flush_denormal_flushes_during_the_run_only_and_is_part_of_its_identity(
    registry, runs_dir
):
    probe = DenormalProbe()
    registry.pm.register(probe, name="probe")
    try:
        flushed = run(config(runs_dir, epochs=1, flush_denormal=True), registry=registry, log=quiet)
        plain = run(config(runs_dir, epochs=1), registry=registry, log=quiet)
    finally:
        registry.pm.unregister(name="probe")
    assert probe.seen[0] == 0.0 and probe.seen[1] > 0.0  # flushed in the first run only
    assert (torch.tensor([1e-39]) * 1.0).item() > 0.0  # and not after it
    assert flushed.record["config"]["flush_denormal"] is True
    assert flushed.record["run_hash"] != plain.record["run_hash"]
    assert "flush_denormal" in RunConfig.LATER_FIELDS  # earlier records keep their hashes


def test_a_checkpoint_of_another_model_version_is_not_resumed(registry, runs_dir):
    stale, _ = _checkpoint_after_epoch_one(registry, runs_dir)
    entry = registry.models["mmoe"]
    version = entry.spec.version + 1
    bumped = dataclasses.replace(entry, spec=dataclasses.replace(entry.spec, version=version))
    logs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.models, "mmoe", bumped)
        res = run(config(runs_dir, epochs=2, resume=True), registry=registry, log=logs.append)
    assert not any("Resuming" in m for m in logs)
    assert res.record["model"]["version"] == version
    assert len(res.record["training"]["history"]) == 2
    assert stale.exists()  # the other version's checkpoint is left alone


def test_nan_loss_stops_with_clear_message(registry, runs_dir):
    cfg = RunConfig(
        model="constant",
        dataset="tiny-synth",
        params={"init": "nan"},
        out=str(runs_dir),
        progress=False,
    )
    with pytest.raises(TrainingError, match=r"training loss became nan at epoch 1, step 1.*--lr"):
        run(cfg, registry=registry, log=quiet)
    assert not list(runs_dir.glob("*.json"))


def test_scenario_pure_batching_runs_and_is_recorded(registry, runs_dir):
    res = run(config(runs_dir, epochs=1, batching="scenario_pure"), registry=registry, log=quiet)
    assert res.record["config"]["batching"] == "scenario_pure"


def test_record_contents(registry, runs_dir):
    res = run(config(runs_dir, epochs=2, seed=3), registry=registry, log=quiet)
    rec = json.loads(res.path.read_text())
    assert rec["status"] == "finished"
    assert rec["protocol"]["id"].startswith("synthetic/tiny-synth/")
    assert rec["config"]["params"]["n_experts"] == 3  # resolved and typed
    assert rec["config"]["params"]["dropout"] == 0.2  # defaults included
    assert rec["config"]["seed"] == 3
    assert rec["model"]["n_params"] > 0
    assert rec["environment"]["versions"]["torch"]
    assert rec["environment"]["hardware"]["device"] == "cpu"
    assert rec["environment"]["hardware"]["cpu"]
    assert rec["training"]["train_samples_per_s"] > 0
    assert len(rec["training"]["history"]) == 2
    assert {"auc/ctr", "auc/ctcvr", "macro_auc/cvr"} <= set(rec["training"]["history"][0]["valid"])
    cells = {(m["scenario"], m["task"], m["metric"]) for m in rec["test"]["metrics"]}
    assert ("s0", "cvr", "auc") in cells and ("macro", "ctr", "logloss") in cells
    assert rec["wall_seconds"] > 0 and rec["command"]


def test_unknown_param_and_wrong_type(registry, runs_dir):
    with pytest.raises(ConfigError, match=r"takes no param 'n_expert'.*Did you mean 'n_experts'"):
        run(config(runs_dir, params={"n_expert": "4"}), registry=registry, log=quiet)
    with pytest.raises(ConfigError, match=r"'n_experts' expects int.*got 'four'"):
        run(config(runs_dir, params={"n_experts": "four"}), registry=registry, log=quiet)
    with pytest.raises(ConfigError, match=r"takes no param 'mode'.*scenario_towers"):
        run(config(runs_dir, params={"mode": "st"}), registry=registry, log=quiet)


def test_unavailable_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="must be auto, cpu"):
        resolve_device("tpu")
    assert resolve_device("auto").type == "cpu"


def test_unwritable_output_directory(registry, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="output directory .* is not writable"):
        run(config(blocker / "runs"), registry=registry, log=quiet)


def test_esmm_head_wraps_any_model(registry, runs_dir):
    # Without dropout: two epochs on tiny-synth sit close to chance, so keep the masks out of it.
    params = {**SMALL_MMOE, "dropout": "0"}
    res = run(config(runs_dir, epochs=2, head="esmm", params=params), registry=registry, log=quiet)
    assert res.record["config"]["head"] == "esmm"
    assert res.record["test"]["summary"]["auc/ctr"] > 0.5


def test_esmm_head_needs_related_tasks(registry, runs_dir):
    with pytest.raises(ConfigError, match="--head esmm needs tasks"):
        run(config(runs_dir, dataset="census-income", head="esmm"), registry=registry, log=quiet)


@given(
    n=st.integers(1, 5000),
    block=st.integers(1, 700),
    window=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_block_shuffle_covers_every_row_once(n, block, window, seed):
    from mssbench.runners.trainer import block_shuffled_rows

    rows = block_shuffled_rows(n, block, window, torch.Generator().manual_seed(seed))
    assert torch.equal(rows.sort().values, torch.arange(n))
    # Locality: the order is a sequence of windows, each the rows of at most `window` blocks.
    ids = rows.div(block, rounding_mode="floor").tolist()
    seen, current = set(), set()
    for i, b in enumerate(ids):
        if b not in current:
            if len(current) == window or b in seen:
                assert all(x in seen for x in current)  # the previous window is complete
                current = set()
            assert b not in seen or b in current
            current.add(b)
            seen.add(b)
        assert len(current) <= window, f"window of more than {window} blocks at row {i}"


def test_result_hash_of_earlier_configs_is_unchanged():
    """Fields added later enter the hash only when set: finished runs keep being found.

    The values every earlier run had (no output-bias init, selection on mean AUC) give the
    earlier hashes; today's defaults train differently and hash differently.
    """
    earlier = {"bias_init": "none", "select": "mean_auc"}
    assert (
        RunConfig(model="mmoe", dataset="census-income", **earlier).result_hash()
        == "9dca618ac45d"
    )
    assert RunConfig(model="mmoe", dataset="census-income").result_hash() != "9dca618ac45d"
    cfg = RunConfig(
        model="aesm", dataset="aliexpress-synth", seed=3, params={"embed_dim": 16}, **earlier
    )
    assert cfg.result_hash() == "528a4ac3348a"
    assert (
        RunConfig(
            model="aesm",
            dataset="aliexpress-synth",
            seed=3,
            params={"embed_dim": 16},
            precision="bf16",
            **earlier,
        ).result_hash()
        != cfg.result_hash()
    )
    assert RunConfig(model="mmoe", dataset="census-income", compile=True).result_hash() != (
        "9dca618ac45d"
    )


def test_bf16_autocast_trains_and_is_recorded(registry, runs_dir):
    res = run(config(runs_dir, epochs=8, precision="bf16"), registry=registry, log=quiet)
    assert res.record["config"]["precision"] == "bf16"
    assert res.record["test"]["summary"]["auc/ctr"] > 0.7  # still learns the planted signal
    with pytest.raises(ConfigError, match="precision"):
        run(config(runs_dir, precision="fp16"), registry=registry, log=quiet)


def test_compiled_training_matches_eager(registry, runs_dir):
    kw = dict(model="constant", params={}, epochs=1, batch_size=512)
    eager = run(config(runs_dir, **kw), registry=registry, log=quiet)
    compiled = run(config(runs_dir, compile=True, **kw), registry=registry, log=quiet)
    assert compiled.record["config"]["compile"] is True
    for key, value in eager.record["test"]["summary"].items():
        assert compiled.record["test"]["summary"][key] == pytest.approx(value, abs=1e-5), key


@given(n=st.integers(2, 200), bs=st.integers(2, 40), seed=st.integers(0, 2**16))
def test_prefetched_batches_are_the_same_batches(n, bs, seed):
    from mssbench.runners.trainer import iter_batches
    from mssbench.testing.synthetic import make_schema, make_split

    split = make_split(make_schema(), n, seed)
    order = batch_indices(n, bs, torch.Generator().manual_seed(seed))
    plain = list(iter_batches(split, order, torch.device("cpu"), prefetch=False))
    ahead = list(iter_batches(split, order, torch.device("cpu"), prefetch=True))
    assert len(plain) == len(ahead) == len(order)
    for (i1, b1), (i2, b2) in zip(plain, ahead):
        assert torch.equal(i1, i2)
        assert all(torch.equal(x, y) for x, y in zip(b1, b2))


@pytest.mark.parametrize("option", ["prefetch", "retain_host_memory"])
def test_speed_options_train_bit_identically(registry, option):
    """Prefetching batches and retaining freed host memory change the speed, never a value."""
    from mssbench.api import build_model
    from mssbench.runners.trainer import fit
    from mssbench.testing.synthetic import make_dataset

    data = make_dataset(n_train=700, n_valid=200, n_test=50)
    states = []
    for on in (False, True):
        torch.manual_seed(0)
        model = build_model(registry, "mmoe", data.schema, dict(SMALL_MMOE))
        fit(
            model,
            data.schema,
            data.train,
            data.valid,
            model_name="mmoe",
            device=torch.device("cpu"),
            seed=1,
            epochs=2,
            batch_size=64,
            eval_batch_size=128,
            lr=1e-3,
            weight_decay=0.0,
            patience=5,
            progress=False,
            log=quiet,
            **{option: on},
        )
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
