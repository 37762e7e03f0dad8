import dataclasses
import json
import os
import sys

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.suite import parse_seeds, plan, run_suite, split_params

SMALL = [
    "-p",
    "embed_dim=8",
    "-p",
    "mmoe.n_experts=2",
    "-p",
    "mmoe.expert_hidden=16",
    "-p",
    "mmoe.tower_hidden=8",
]


@given(st.integers(1, 50))
def test_seed_count(n):
    assert parse_seeds(str(n)) == list(range(n))


def test_seed_list_and_errors():
    assert parse_seeds("0,3,7") == [0, 3, 7]
    for bad in ("x", "1,1", ","):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_params_are_distributed(registry):
    per_model, notes = split_params(
        registry, ["mmoe", "constant"], {"embed_dim": "8", "constant.init": "0.5"}
    )
    assert per_model == {"mmoe": {"embed_dim": "8"}, "constant": {"init": "0.5"}}
    assert notes == ["-p embed_dim=8 does not apply to constant"]
    with pytest.raises(ConfigError, match="no model of this suite takes 'nope'"):
        split_params(registry, ["mmoe"], {"nope": "1"})
    with pytest.raises(ConfigError, match="not in this suite"):
        split_params(registry, ["mmoe"], {"star.x": "1"})


def test_plan_skips_finished_runs_and_errors_become_rows(registry, tmp_path):
    base = RunConfig(model="", dataset="", epochs=1, out=str(tmp_path), progress=False)
    jobs, _ = plan(registry, "constant", "tiny-synth", [0, 1], base, {})
    assert [j.status for j in jobs] == ["pending", "pending"]
    run_suite(jobs, 1, plugins=("mssbench.testing.plugin",), log=lambda m: None)
    assert [j.status for j in jobs] == ["finished", "finished"]
    again, _ = plan(registry, "constant", "tiny-synth", [0, 1, 2], base, {})
    assert [j.status for j in again] == ["skipped", "skipped", "pending"]
    # A model that fails mid-suite becomes an error row; the others still run.
    failing, _ = plan(registry, "constant", "tiny-synth", [5], base, {"init": "nan"})
    mixed = failing + again
    run_suite(mixed, 1, plugins=("mssbench.testing.plugin",), log=lambda m: None)
    assert mixed[0].status == "error" and "training loss became nan" in mixed[0].error
    assert mixed[-1].status == "finished"


def test_a_dry_run_lists_finished_running_resumable_and_pending_runs(registry, tmp_path):
    """``--dry-run`` says what a long suite has left (and its checkpoints' epochs) and writes
    nothing: no record, no lock, no checkpoint."""
    from filelock import FileLock

    from mssbench.api import checkpoint_path

    out = tmp_path / "runs"
    base = RunConfig(model="", dataset="", epochs=1, out=str(out), progress=False)
    jobs, _ = plan(registry, "constant", "tiny-synth", [0], base, {})
    run_suite(jobs, 1, plugins=("mssbench.testing.plugin",), log=lambda m: None)
    [record] = list(out.glob("*.json"))
    pending, _ = plan(registry, "constant", "tiny-synth", [0, 1, 2, 3], base, {})
    resumable = checkpoint_path(out, pending[1].config, registry)
    resumable.parent.mkdir()
    torch.save({"state": {"epoch": 3, "wall_seconds": 1800.0}}, resumable)
    running = checkpoint_path(out, pending[2].config, registry).with_suffix(".lock")
    args = ["suite", "--models", "constant", "--datasets", "tiny-synth", "--seeds", "4"]
    args += ["--epochs", "1", "--out", str(out), "--plugin", "mssbench.testing.plugin"]
    with FileLock(str(running)):
        before = sorted(p.name for p in out.rglob("*"))
        result = CliRunner().invoke(main, [*args, "--dry-run"])
        after = sorted(p.name for p in out.rglob("*"))
    assert result.exit_code == 0, result.output
    rows = [line.split("|")[1:-1] for line in result.output.splitlines() if "tiny-synth" in line]
    cells = [[cell.strip() for cell in row] for row in rows]
    assert [row[2:5] for row in cells] == [
        ["0", "finished", ""],
        ["1", "to run", "3"],
        ["2", "running", ""],
        ["3", "to run", ""],
    ]
    assert cells[0][5] == record.name and cells[1][5] == resumable.name
    hours = json.loads(record.read_text())["wall_seconds"] / 3600
    assert {row[6] for row in cells} == {f"{hours:.2f}"}  # the finished run's, for all four
    assert [row[7] for row in cells] == ["", "0.50", "", ""]  # the checkpoint's half hour
    assert f"3 runs left; 3 of them should take about {3 * hours:.1f} h of runs" in result.output
    assert after == before


def test_plan_reruns_finished_configurations_of_another_model_version(registry, tmp_path):
    base = RunConfig(model="", dataset="", epochs=1, out=str(tmp_path), progress=False)
    jobs, _ = plan(registry, "constant", "tiny-synth", [0], base, {})
    run_suite(jobs, 1, plugins=("mssbench.testing.plugin",), log=lambda m: None)
    [record] = tmp_path.glob("*.json")
    assert json.loads(record.read_text())["model"]["version"] == 1
    entry = registry.models["constant"]
    bumped = dataclasses.replace(entry, spec=dataclasses.replace(entry.spec, version=2))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.models, "constant", bumped)
        again, _ = plan(registry, "constant", "tiny-synth", [0], base, {})
        assert [j.status for j in again] == ["pending"]
    same, _ = plan(registry, "constant", "tiny-synth", [0], base, {})
    assert [j.status for j in same] == ["skipped"]


def test_suite_cli_runs_in_parallel_and_resumes(tmp_path, monkeypatch):
    cli = CliRunner()
    args = [
        "suite",
        "--plugin",
        "mssbench.testing.plugin",
        "--models",
        "mmoe,constant",
        "--datasets",
        "tiny-synth",
        "--seeds",
        "2",
        *SMALL,
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    ]
    # As on a real command line (spawned workers inherit the parent's argv).
    monkeypatch.setattr(sys, "argv", ["mssbench", *args, "--jobs", "2"])
    res = cli.invoke(main, [*args, "--jobs", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "| tiny-synth | mmoe" in res.output and "| tiny-synth | constant" in res.output
    records = sorted(tmp_path.glob("*.json"))
    assert len(records) == 4
    rec = json.loads(records[0].read_text())
    assert rec["command"][:2] == ["mssbench", "suite"]  # which command produced it
    res = cli.invoke(main, [*args, "--jobs", "1"], catch_exceptions=False)
    assert "4 already finished" in res.output and "0 to run" in res.output
    assert len(list(tmp_path.glob("*.json"))) == 4


def test_suite_unknown_model_fails_before_running(tmp_path):
    res = CliRunner().invoke(
        main,
        ["suite", "--models", "mmoe,nope", "--datasets", "census-income", "--out", str(tmp_path)],
    )
    assert res.exit_code == 2 and "unknown model 'nope'" in res.output


def test_each_worker_gets_its_own_gpu_without_touching_the_config(monkeypatch):
    """Several GPUs: workers are pinned round-robin through CUDA_VISIBLE_DEVICES, so the runs'
    configurations (and the hashes that find finished runs) stay ``device=auto``."""
    import queue

    from mssbench.suite import _worker_init, gpu_slots

    assert gpu_slots(4, 1) == [] and gpu_slots(4, 0) == []
    assert gpu_slots(3, 2) == [0, 1, 0]
    assert gpu_slots(2, 4) == [0, 1]
    slots: queue.Queue = queue.Queue()
    slots.put(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    threads = torch.get_num_threads()
    try:
        _worker_init(1, slots)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        torch.set_num_threads(threads)


@given(
    elapsed=st.floats(0, 1e6, allow_nan=False),
    total=st.integers(1, 500),
    data=st.data(),
)
def test_eta_is_the_mean_pace_times_the_runs_left(elapsed, total, data):
    from mssbench.suite import eta_text

    done = data.draw(st.integers(1, total))
    text = eta_text(elapsed, done, total)
    assert text.split(" elapsed, ")[1] == ("done" if done == total else text.split(", ")[1])
    if done < total:
        left = text.split("about ")[1].removesuffix(" left").split(":")
        seconds = sum(int(p) * 60**i for i, p in enumerate(reversed(left)))
        assert abs(seconds - elapsed / done * (total - done)) <= 0.5 + 1e-9


def test_eta_reads_as_a_clock():
    from mssbench.suite import eta_text

    assert eta_text(65, 1, 4) == "1:05 elapsed, about 3:15 left"
    assert eta_text(3700, 2, 2) == "1:01:40 elapsed, done"
