"""Tracker plugins: MLflow (a real local file store) and TensorBoard (event files read back)."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_run_args

from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.results import load_records
from mssbench.trackers import check_trackers, parse_uris, registered


def _run(out, *extra):
    result = CliRunner().invoke(main, tiny_run_args(out, 2, "--no-progress", *extra))
    assert result.exit_code == 0, result.output
    [path] = sorted(Path(out).glob("*.json"))
    return json.loads(path.read_text()), path


def test_trackers_are_registered_and_listed(registry):
    known = registered(registry.pm)
    assert {"mlflow", "tensorboard"} <= set(known)
    assert known["mlflow"][1] == "trackers"
    result = CliRunner().invoke(main, ["plugins"])
    assert "tracker  mlflow" in result.output and "tracker  tensorboard" in result.output


def test_unknown_tracker_is_an_error(registry, tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'mlfow'.*mlflow, tensorboard"):
        check_trackers(registry.pm, ["mlfow"], {})
    with pytest.raises(ConfigError, match="not enabled"):
        check_trackers(registry.pm, ["mlflow"], {"tensorboard": "/tmp/x"})
    with pytest.raises(ConfigError, match="NAME=URI"):
        parse_uris(["file:///tmp"])
    result = CliRunner().invoke(main, tiny_run_args(tmp_path, 1, "--tracker", "wandb"))
    assert result.exit_code == 2 and "unknown tracker 'wandb'" in result.output


def test_trackers_do_not_change_the_run_hash():
    plain = RunConfig("mmoe", "census-income")
    tracked = RunConfig("mmoe", "census-income", trackers=["mlflow"], tracker_uris={"m": "x"})
    assert plain.result_hash() == tracked.result_hash()


def test_mlflow_logs_params_epochs_test_metrics_and_record(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'mssbench[mlflow]')")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: the file store is opt-in
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    record, path = _run(tmp_path / "runs", "--tracker", "mlflow", "--tracker-uri", f"mlflow={uri}")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny-synth")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["params.embed_dim"] == "8"
    assert run.data.params["batch_size"] == "256"
    assert run.data.params["model.version"] == str(record["model"]["version"])
    assert run.data.tags["mssbench.run_hash"] == record["run_hash"]
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(
        [e["train_loss"] for e in record["training"]["history"]]
    )
    for key, value in record["test"]["summary"].items():
        if isinstance(value, float):
            assert run.data.metrics[f"test/{key}"] == pytest.approx(value)
    [artifact] = client.list_artifacts(run.info.run_id)
    assert artifact.path == path.name
    local = client.download_artifacts(run.info.run_id, path.name, str(tmp_path))
    assert json.loads(Path(local).read_text())["run_hash"] == record["run_hash"]


def test_mlflow_marks_a_failed_run_failed(tmp_path, registry, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'mssbench[mlflow]')")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    run = _started_run(registry, "mlflow", uri)
    registry.pm.hook.mssbench_epoch_end(run=run, epoch=1, metrics={"train_loss": 0.5})
    registry.pm.hook.mssbench_run_failed(run=run, error=RuntimeError("out of memory"))
    client = MlflowClient(tracking_uri=uri)
    [found] = client.search_runs([client.get_experiment_by_name("tiny-synth").experiment_id])
    assert found.info.status == "FAILED"
    assert found.data.tags["mssbench.error"] == "RuntimeError: out of memory"
    assert found.data.metrics["train_loss"] == 0.5


@pytest.mark.slow  # MLflow creates a SQLite store by running its migrations: 10-15 s on 2 cores
def test_mlflow_default_store_is_sqlite_beside_the_records(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'mssbench[mlflow]')")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    record, path = _run(out, "--tracker", "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{out / '.mlflow' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("tiny-synth").experiment_id])
    assert run.info.status == "FINISHED"
    assert (out / ".mlflow" / "artifacts").is_dir() and not (tmp_path / "mlartifacts").exists()
    records, rejected = load_records(out)  # the record's copy in the store is not a second run
    assert len(records) == 1 and not rejected
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == [path.name]


def test_a_tracker_that_cannot_start_stops_the_run_in_one_line(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'mssbench[mlflow]')")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "mlruns").as_uri()
    args = tiny_run_args(
        tmp_path / "runs", 1, "--tracker", "mlflow", "--tracker-uri", f"mlflow={uri}"
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.startswith("Error: tracker mlflow (start): ")
    assert result.output.count("\n") == 1
    assert not list((tmp_path / "runs").glob("*.json"))


def _started_run(registry, tracker, uri):
    config = RunConfig("mmoe", "tiny-synth", trackers=[tracker], tracker_uris={tracker: uri})
    run = {
        "run_hash": config.result_hash(),
        "started_at": "2026-12-04T00:00:00+00:00",
        "model": {"name": "mmoe", "version": 1},
        "dataset": {"name": "tiny-synth"},
        "protocol": {"id": "synthetic/tiny-v1"},
        "config": config.to_dict(),
    }
    registry.pm.hook.mssbench_run_start(run=run)
    return run


def _scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [run_dir] = [p for p in Path(logdir).rglob("*") if p.is_dir() and any(p.glob("events.*"))]
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return run_dir, acc


def test_tensorboard_event_files_read_back(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed: 'mssbench[tensorboard]'")
    logdir = tmp_path / "tb"
    record, _ = _run(
        tmp_path / "runs", "--tracker", "tensorboard", "--tracker-uri", f"tensorboard={logdir}"
    )
    run_dir, acc = _scalars(logdir)
    assert run_dir.relative_to(logdir).parts[0] == "tiny-synth"
    assert record["run_hash"] in run_dir.name
    loss = acc.Scalars("train_loss")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx(
        [e["train_loss"] for e in record["training"]["history"]], rel=1e-6
    )
    tags = acc.Tags()["scalars"]
    assert "selection_score" in tags and any(t.startswith("valid/auc/") for t in tags)
    auc = {k: v for k, v in record["test"]["summary"].items() if k.startswith("auc/")}
    assert auc
    for key, value in auc.items():
        assert acc.Scalars(f"test/{key}")[-1].value == pytest.approx(value, rel=1e-6)


def test_tensorboard_failed_run_notes_the_error(tmp_path, registry):
    pytest.importorskip("tensorboard", reason="tensorboard not installed: 'mssbench[tensorboard]'")
    logdir = tmp_path / "tb"
    run = _started_run(registry, "tensorboard", str(logdir))
    registry.pm.hook.mssbench_epoch_end(run=run, epoch=1, metrics={"valid_loss": 0.25})
    registry.pm.hook.mssbench_run_failed(run=run, error=ValueError("bad batch"))
    _, acc = _scalars(logdir)
    assert acc.Scalars("valid_loss")[0].value == pytest.approx(0.25)
    [error] = acc.Tensors("error/text_summary")
    assert b"ValueError: bad batch" in error.tensor_proto.string_val[0]


def test_tracker_from_config_file(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed: 'mssbench[tensorboard]'")
    logdir = tmp_path / "tb"
    config = tmp_path / "run.yaml"
    config.write_text(f"trackers: [tensorboard]\ntracker_uris: {{tensorboard: '{logdir}'}}\n")
    _run(tmp_path / "runs", "--config", str(config))
    _, acc = _scalars(logdir)
    assert "train_loss" in acc.Tags()["scalars"]


@pytest.mark.parametrize(
    ("tracker", "modules"),
    [("mlflow", ["mlflow", "mlflow.tracking"]), ("tensorboard", ["torch.utils.tensorboard"])],
)
def test_a_missing_package_is_one_line_naming_the_extra(tmp_path, monkeypatch, tracker, modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    result = CliRunner().invoke(main, tiny_run_args(tmp_path, 1, "--tracker", tracker))
    assert result.exit_code == 2
    assert result.output == (
        f"Error: --tracker {tracker} needs the {tracker} package: "
        f"pip install 'mssbench[{tracker}]'\n"
    )
