"""Tracker plugins: MLflow (a real local file store), TensorBoard (event files read back) and
W&B (the offline run directory read back)."""

import json
import re
import struct
import sys
import time
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
    assert re.search(r"^tracker +mlflow ", result.output, re.M)
    assert re.search(r"^tracker +tensorboard ", result.output, re.M)


def test_unknown_tracker_is_an_error(registry, tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'mlfow'.*mlflow, tensorboard"):
        check_trackers(registry.pm, ["mlfow"], {})
    with pytest.raises(ConfigError, match="not enabled"):
        check_trackers(registry.pm, ["mlflow"], {"tensorboard": "/tmp/x"})
    with pytest.raises(ConfigError, match="NAME=URI"):
        parse_uris(["file:///tmp"])
    result = CliRunner().invoke(main, tiny_run_args(tmp_path, 1, "--tracker", "neptune"))
    assert result.exit_code == 2 and "unknown tracker 'neptune'" in result.output


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
    [
        ("mlflow", ["mlflow", "mlflow.tracking"]),
        ("tensorboard", ["torch.utils.tensorboard"]),
        ("wandb", ["wandb"]),
    ],
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


def _wandb_offline_run(directory, wait_s=30.0):
    """The records of the one offline run under ``directory``: ``{kind: [protobuf, ...]}``.

    ``run.finish()`` returns a few milliseconds before W&B's writer process has flushed the
    file, so this waits (up to ``wait_s``) for the run's ``exit`` record.
    """
    [run_dir] = Path(directory).glob("wandb/offline-run-*")
    [log] = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + wait_s
    records = _wandb_records(log.read_bytes())
    while "exit" not in records and time.monotonic() < deadline:
        time.sleep(0.05)
        records = _wandb_records(log.read_bytes())
    return run_dir, records


def _wandb_records(data):
    """Parse a ``run-<id>.wandb`` file: a 7-byte header (``:W&B``, magic, version), then a
    LevelDB-style log of 32 KiB blocks of chunks (CRC32, length, type FULL/FIRST/MIDDLE/LAST).
    """
    from wandb.proto import wandb_internal_pb2

    pos, pending, out = 7, b"", {}
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768  # block trailer
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if pos + 7 + length > len(data):
            break  # a chunk still being written
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(pending)
            out.setdefault(record.WhichOneof("record_type"), []).append(record)
    return out


def _wandb_summary(records):
    summary = {}
    for record in records.get("summary", []):
        for item in record.summary.update:
            summary["/".join(item.nested_key) or item.key] = json.loads(item.value_json)
    return summary


def _wandb_history(records, key):
    rows = [
        {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
        for r in records.get("history", [])
    ]
    return [(row["_step"], row[key]) for row in rows if key in row]


def test_wandb_offline_run_reads_back(tmp_path):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'mssbench[wandb]')")
    directory = tmp_path / "wb"
    record, path = _run(
        tmp_path / "runs", "--tracker", "wandb", "--tracker-uri", f"wandb={directory}"
    )
    run_dir, records = _wandb_offline_run(directory)
    [opened] = records["run"]
    assert opened.run.project == "tiny-synth"
    config = {u.key: json.loads(u.value_json) for u in opened.run.config.update}
    assert config["params.embed_dim"] == "8" and config["batch_size"] == "256"
    assert config["mssbench.run_hash"] == record["run_hash"]
    assert _wandb_history(records, "train_loss") == [
        (e["epoch"], pytest.approx(e["train_loss"])) for e in record["training"]["history"]
    ]
    summary = _wandb_summary(records)
    auc = {k: v for k, v in record["test"]["summary"].items() if k.startswith("auc/")}
    assert auc
    for key, value in auc.items():
        assert summary[f"test/{key}"] == pytest.approx(value)
    [done] = records["exit"]
    assert done.exit.exit_code == 0
    copy = run_dir / "files" / path.name
    assert json.loads(copy.read_text())["run_hash"] == record["run_hash"]


def test_wandb_failed_run_is_marked_failed(tmp_path, registry):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'mssbench[wandb]')")
    run = _started_run(registry, "wandb", str(tmp_path / "wb"))
    registry.pm.hook.mssbench_epoch_end(run=run, epoch=1, metrics={"train_loss": 0.5})
    registry.pm.hook.mssbench_run_failed(run=run, error=RuntimeError("out of memory"))
    _, records = _wandb_offline_run(tmp_path / "wb")
    [done] = records["exit"]
    assert done.exit.exit_code == 1
    assert _wandb_summary(records)["mssbench.error"] == "RuntimeError: out of memory"
    assert _wandb_history(records, "train_loss") == [(1, 0.5)]


def test_wandb_default_directory_is_hidden_beside_the_records(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'mssbench[wandb]')")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default
    out = tmp_path / "runs"
    _run(out, "--tracker", "wandb")
    assert list((out / ".wandb").glob("wandb/offline-run-*/run-*.wandb"))
    records, rejected = load_records(out)  # the record's copy in the run is not a second run
    assert len(records) == 1 and not rejected
