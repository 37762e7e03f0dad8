import json
import sys
import textwrap
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import mssbench.testing.plugin as testing_plugin
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.plugins import load_registry
from mssbench.suite import plan
from mssbench.suite_ray import (
    _get,
    _task_env,
    _warn_if_too_big,
    check_resources,
    describe_resources,
    run_suite_ray,
)

TESTING = ("mssbench.testing.plugin",)

EXPLODING = textwrap.dedent(
    """
    from mssbench import ModelSpec, hookimpl

    def build(schema, width):
        raise RuntimeError("boom")

    @hookimpl
    def mssbench_register_models():
        return [ModelSpec(name="exploding", summary="raises when built", build=build,
                          defaults={"width": 1})]
    """
)


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance for the module: starting Ray costs seconds."""
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        object_store_memory=100 * 2**20,
    )
    yield ray
    ray.shutdown()


def _base(out, **kw):
    return RunConfig(model="", dataset="", epochs=1, out=str(out), resume=True, **kw)


def test_suite_writes_records_on_the_driver_and_resumes(ray_local, tmp_path, monkeypatch):
    out = tmp_path / "runs"
    registry = load_registry(extra=[("mssbench-testing", testing_plugin)])
    argv = ["mssbench", "suite", "--executor", "ray"]
    monkeypatch.setattr(sys, "argv", argv)
    models, params = "constant,shared_bottom", {"embed_dim": "4"}
    jobs, _ = plan(registry, models, "tiny-synth", [0, 1], _base(out), params)
    lines = []
    run_suite_ray(jobs, TESTING, cpus_per_run=1, log=lines.append)
    assert [j.status for j in jobs] == ["finished"] * 4, [j.error for j in jobs]
    assert sorted(line.split("]")[0] for line in lines) == [f"[{i}/4" for i in range(1, 5)]
    records = sorted(out.glob("*.json"))
    assert len(records) == 4
    assert sorted(j.path for j in jobs) == sorted(str(p) for p in records)
    rec = json.loads(records[0].read_text())
    assert rec["status"] == "finished"
    assert rec["command"] == argv  # the driver's command, not the Ray worker's
    assert rec["config"]["out"] == str(out)  # not the worker's temporary directory
    assert {j.summary["auc/ctr"] is not None for j in jobs} == {True}

    again, _ = plan(registry, models, "tiny-synth", [0, 1], _base(out), params)
    assert [j.status for j in again] == ["skipped"] * 4
    lines.clear()
    run_suite_ray(again, TESTING, log=lines.append)
    assert lines == [] and len(list(out.glob("*.json"))) == 4


def test_failing_runs_become_error_rows_and_file_plugins_reach_workers(ray_local, tmp_path):
    plugin_file = tmp_path / "exploding.py"
    plugin_file.write_text(EXPLODING)
    plugins = (*TESTING, str(plugin_file))
    registry = load_registry(plugins=plugins)
    base = _base(tmp_path / "runs")
    jobs, _ = plan(registry, "exploding,constant", "tiny-synth", [0], base, {})
    nan, _ = plan(registry, "constant", "tiny-synth", [5], base, {"init": "nan"})
    jobs += nan
    lines = []
    run_suite_ray(jobs, plugins, max_in_flight=1, log=lines.append)
    exploding, constant, diverging = jobs
    assert exploding.status == "error"
    assert f"RuntimeError: boom ({plugin_file}, line 5)" in exploding.error  # the file as given
    assert diverging.status == "error" and "training loss became nan" in diverging.error
    assert constant.status == "finished"
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1
    assert sum("ERROR" in line for line in lines) == 2


def test_a_lost_task_becomes_an_error_result(ray_local):
    def crash():
        raise OSError("node lost")

    result = _get(ray_local, ray_local.remote(num_cpus=0)(crash).remote())
    assert result["status"] == "error" and "OSError: node lost" in result["error"]


def test_cli_suite_on_ray(ray_local, tmp_path):
    args = [
        "suite",
        "--executor",
        "ray",
        "--jobs",
        "1",
        "--plugin",
        "mssbench.testing.plugin",
        "--models",
        "constant",
        "--datasets",
        "tiny-synth",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--out",
        str(tmp_path),
    ]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 to run, on Ray, 1 CPU each, at most 1 at a time." in res.output
    assert "[2/2] tiny-synth constant seed" in res.output
    assert "| tiny-synth | constant |          2 |        0 |" in res.output
    assert len(list(tmp_path.glob("*.json"))) == 2
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "2 already finished" in res.output and "0 to run" in res.output


def test_missing_ray_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    res = CliRunner().invoke(
        main,
        ["suite", "--executor", "ray", "--datasets", "census-income", "--out", str(tmp_path)],
    )
    assert res.exit_code == 2
    error_lines = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "pip install 'mssbench[ray]'" in error_lines[0]


def test_ray_options_need_the_ray_executor(tmp_path):
    res = CliRunner().invoke(
        main, ["suite", "--datasets", "census-income", "--gpus-per-run", "1", "--out", tmp_path]
    )
    assert res.exit_code == 2 and "--gpus-per-run is for --executor ray" in res.output


def test_resources_are_checked_as_ray_would():
    check_resources(0.5, 0.25, ["auto"])
    check_resources(4, 1, ["cuda"])
    for cpus, gpus in ((0, 0), (1, -1), (1.5, 0), (1, 2.5)):
        with pytest.raises(ConfigError, match="per-run"):
            check_resources(cpus, gpus, ["auto"])
    with pytest.raises(ConfigError, match="--device cuda needs --gpus-per-run"):
        check_resources(1, 0, ["cuda:1"])
    assert describe_resources(1, 0) == "1 CPU"
    assert describe_resources(4, 0.5) == "4 CPUs + 0.5 GPU"


def test_workers_load_the_plugins_the_driver_loads(monkeypatch):
    monkeypatch.setenv("MSSBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("MSSBENCH_TRACE_PLUGINS", raising=False)
    assert _task_env(0) == {"MSSBENCH_DISABLE_PLUGIN_AUTOLOAD": "1", "CUDA_VISIBLE_DEVICES": ""}
    assert _task_env(1) == {"MSSBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}


def test_runs_too_big_for_the_cluster_are_reported():
    fake_ray = SimpleNamespace(cluster_resources=lambda: {"CPU": 2.0})
    lines = []
    _warn_if_too_big(fake_ray, 2, 0, lines.append)
    assert lines == []
    _warn_if_too_big(fake_ray, 4, 1, lines.append)
    assert [line.split(" and")[0] for line in lines] == [
        "Warning: each run asks Ray for 4 CPUs",
        "Warning: each run asks Ray for 1 GPU",
    ]
