"""Runtime safety: atomic writes, safe checkpoints, run locks, kill -9 and resume."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import SMALL_MMOE, tiny_run_args
from filelock import FileLock
from hypothesis import given
from hypothesis import strategies as st

import mssbench
from mssbench.api import checkpoint_path, run
from mssbench.cli import main
from mssbench.config import RunConfig
from mssbench.errors import ConfigError
from mssbench.io import atomic_write, recover_dir, replace_dir, write_json, write_text
from mssbench.plugins import load_registry
from mssbench.testing import plugin as testing_plugin

ROOT = Path(__file__).resolve().parents[1]


#: The checkpoint and lock file names carry the run's identity (model version included).
REGISTRY = load_registry(extra=[("mssbench-testing", testing_plugin)])


def config(out, **kw):
    base = dict(
        model="mmoe",
        dataset="tiny-synth",
        params=dict(SMALL_MMOE),
        epochs=2,
        batch_size=256,
        patience=5,
        out=str(out),
        progress=False,
    )
    base.update(kw)
    return RunConfig(**base)


def quiet(_msg):
    pass


def one_error_line(res) -> str:
    """The single ``Error:`` line of a failed command (and no traceback)."""
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert "\n" not in errors[0]
    return errors[0]


# --- atomic writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_honours_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        text = write_text(tmp_path / "page.md", "hello\n")
        data = write_json(tmp_path / "rec.json", {"a": 1})
        binary = atomic_write(tmp_path / "ck.pt", lambda fh: fh.write(b"\0"), binary=True)
    finally:
        os.umask(old)
    for path in (text, data, binary):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "page.md"
    write_text(target, "old\n")

    def boom(fh):
        fh.write("half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["page.md"]


def test_atomic_write_without_overwrite_never_replaces(tmp_path):
    target = write_json(tmp_path / "r.json", {"v": 1})
    with pytest.raises(FileExistsError):
        write_json(target, {"v": 2}, overwrite=False)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


@given(payload=st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=20)))
def test_write_json_round_trips(tmp_path_factory, payload):
    path = tmp_path_factory.mktemp("j") / "x.json"
    write_json(path, payload)
    assert json.loads(path.read_text()) == payload


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_replace_dir_and_recovery_after_a_kill_between_the_renames(tmp_path):
    dest = tmp_path / "cache"
    dest.mkdir()
    (dest / "v").write_text("1")
    work = tmp_path / "work"
    work.mkdir()
    (work / "v").write_text("2")
    replace_dir(work, dest)
    assert (dest / "v").read_text() == "2" and sorted(os.listdir(tmp_path)) == ["cache"]
    # The state a kill between the two renames leaves: no cache, the previous one aside.
    aside = tmp_path / f".cache.old-{_dead_pid()}"
    os.rename(dest, aside)
    assert recover_dir(dest) is True
    assert (dest / "v").read_text() == "2" and not aside.exists()
    # After a finished swap a leftover old folder of a dead process is removed.
    aside.mkdir()
    assert recover_dir(dest) is False and not aside.exists() and (dest / "v").exists()


# --- records and the .partial folder ------------------------------------------------------------


def test_records_follow_the_umask_and_no_partial_folder_is_left(registry, tmp_path):
    old = os.umask(0o022)
    try:
        res = run(config(tmp_path / "runs"), registry=registry, log=quiet)
    finally:
        os.umask(old)
    assert res.path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [res.path.name]


# --- checkpoints ----------------------------------------------------------------------------


class Planted:
    """Runs a shell command when unpickled (what a planted checkpoint would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cli_config(out, epochs=2) -> RunConfig:
    """The configuration ``tiny_run_args(out, epochs)`` runs."""
    return RunConfig(
        model="mmoe", dataset="tiny-synth", params=dict(SMALL_MMOE), epochs=epochs,
        batch_size=256, out=str(out),
    )


def _plant(out: Path, payload) -> Path:
    path = checkpoint_path(out, cli_config(out), REGISTRY)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


def test_a_planted_checkpoint_is_refused_and_runs_nothing(tmp_path):
    out, marker = tmp_path / "runs", tmp_path / "pwned"
    path = _plant(out, {"model": Planted(marker)})
    res = CliRunner().invoke(main, tiny_run_args(out, 2, "--resume", "--no-progress"))
    line = one_error_line(res)
    assert f"checkpoint {path} cannot be resumed" in line and "refused" in line
    assert "delete it" in line
    assert not marker.exists()
    assert not list(out.glob("*.json"))


def test_a_suite_refuses_a_planted_checkpoint(tmp_path):
    out, marker = tmp_path / "runs", tmp_path / "pwned"
    _plant(out, [Planted(marker)])
    params = [arg for k, v in SMALL_MMOE.items() for arg in ("-p", f"mmoe.{k}={v}")]
    res = CliRunner().invoke(
        main,
        ["suite", "--plugin", "mssbench.testing.plugin", "--models", "mmoe", "--datasets",
         "tiny-synth", "--seeds", "1", "--epochs", "2", "--batch-size", "256", "--jobs", "1",
         *params, "--out", str(out)],
    )
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert "cannot be resumed" in res.output
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"this is not a checkpoint", "not a checkpoint"),
        (b"", "not a checkpoint"),
        (None, "missing model, optimizer"),
    ],
)
def test_a_garbage_checkpoint_is_one_line(tmp_path, content, expect):
    out = tmp_path / "runs"
    path = _plant(out, {"hello": torch.zeros(2)})
    if content is not None:
        path.write_bytes(content)
    res = CliRunner().invoke(main, tiny_run_args(out, 2, "--resume", "--no-progress"))
    line = one_error_line(res)
    assert str(path) in line and expect in line


@pytest.mark.parametrize("broken", ["model", "best", "state"])
def test_a_checkpoint_of_another_shape_is_one_line(registry, tmp_path, broken):
    out = tmp_path / "runs"
    other = config(out, epochs=2, resume=True)
    ck = checkpoint_path(out, other, REGISTRY)
    registry.pm.register(Interrupt(1), name="interrupt")
    with pytest.raises(KeyboardInterrupt):
        run(other, registry=registry, log=quiet)
    registry.pm.unregister(name="interrupt")
    good = torch.load(ck, weights_only=True)
    good[broken] = {"w": torch.zeros(1)} if broken != "state" else {"epoch": "one", "x": 1}
    torch.save(good, ck)
    reason = "its training state has unknown fields" if broken == "state" else "does not fit"
    with pytest.raises(ConfigError, match=reason):
        run(other, registry=registry, log=quiet)


class Interrupt:
    def __init__(self, at):
        self.at = at

    @mssbench.hookimpl
    def mssbench_epoch_end(self, run, epoch, metrics):
        if epoch == self.at:
            raise KeyboardInterrupt


KILLER = """
import os, signal
import mssbench

@mssbench.hookimpl
def mssbench_epoch_end(run, epoch, metrics):
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mssbench", *args], capture_output=True, text=True, env=env,
        timeout=240, **kw
    )


def test_kill_9_after_an_epoch_then_resume_matches_an_uninterrupted_run(registry, tmp_path):
    full = run(config(tmp_path / "full", epochs=3), registry=registry, log=quiet)
    killer = tmp_path / "killer.py"
    killer.write_text(textwrap.dedent(KILLER))
    out = tmp_path / "runs"
    args = tiny_run_args(out, 3, "--no-progress")
    killed = _cli([*args, "--plugin", str(killer)])
    assert killed.returncode == -9, killed.stderr
    assert not list(out.glob("*.json"))
    assert list((out / ".partial").glob("*.pt"))
    resumed = _cli([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "after epoch 2" in resumed.stderr
    [path] = out.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["test"]["metrics"] == json.loads(json.dumps(full.record["test"]["metrics"]))
    assert [h["epoch"] for h in rec["training"]["history"]] == [1, 2, 3]
    # The wall time covers the killed process too (it trained two of the three epochs).
    assert rec["wall_seconds"] >= rec["training"]["train_seconds"]
    # The record names both processes, the epochs each trained and where.
    first, second = rec["training"]["processes"]
    assert (first["first_epoch"], first["last_epoch"]) == (1, 2)
    assert (second["first_epoch"], second["last_epoch"]) == (3, 3)
    assert second["started_at"] == rec["started_at"] != first["started_at"]
    for process in (first, second):
        assert process["hardware"] == rec["environment"]["hardware"]
        assert process["code_sha256"] == rec["environment"]["code_sha256"]
    assert not (out / ".partial").exists()


# --- one configuration at a time -------------------------------------------------------------


def test_a_running_configuration_is_reported_not_run_twice(registry, tmp_path):
    out = tmp_path / "runs"
    cfg = config(out)
    lock_path = checkpoint_path(out, cfg, REGISTRY).with_suffix(".lock")
    lock_path.parent.mkdir(parents=True)
    lock = FileLock(str(lock_path))
    with lock:
        with pytest.raises(ConfigError, match="already running into"):
            run(cfg, registry=registry, log=quiet)
    assert not list(out.glob("*.json"))


def test_a_waiting_suite_run_takes_the_finished_record(registry, tmp_path):
    out = tmp_path / "runs"
    first = run(config(out), registry=registry, log=quiet)
    again = run(config(out), registry=registry, log=quiet, wait=True, skip_finished=True)
    assert again.skipped and again.path == first.path
    assert len(list(out.glob("*.json"))) == 1


SLOW = """
import time
import mssbench

@mssbench.hookimpl
def mssbench_epoch_end(run, epoch, metrics):
    time.sleep(1.5)
"""


def test_two_overlapping_suites_train_and_record_once(tmp_path):
    slow = tmp_path / "slow.py"
    slow.write_text(textwrap.dedent(SLOW))
    out = tmp_path / "runs"
    params = [arg for k, v in SMALL_MMOE.items() for arg in ("-p", f"mmoe.{k}={v}")]
    args = ["suite", "--plugin", "mssbench.testing.plugin", "--plugin", str(slow), "--models",
            "mmoe", "--datasets", "tiny-synth", "--seeds", "1", "--epochs", "2",
            "--batch-size", "256", "--jobs", "1", *params, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "mssbench", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr
        assert "Traceback" not in stderr
    assert len(list(out.glob("*.json"))) == 1
    logs = "".join(stderr for _, stderr in results)
    assert "finished by another process" in logs or "1 already finished" in logs
    assert not (out / ".partial").exists()


def test_a_generated_data_cache_follows_the_umask(tmp_path):
    from mssbench_aliexpress_synth import loader as synth

    old = os.umask(0o022)
    try:
        synth.load({"n_rows": 20_000, "seed": 5, "cache": str(tmp_path)})
    finally:
        os.umask(old)
    [cache] = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert cache.stat().st_mode & 0o777 == 0o755
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in cache.iterdir() if p.is_file())


def test_an_unexpected_exception_is_one_line_with_its_place(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something\nnobody expected " + "x" * 5000)

    monkeypatch.setattr("mssbench.api.run", broken)
    res = CliRunner().invoke(main, tiny_run_args(tmp_path / "runs", 1))
    assert res.exit_code == 3 and "Traceback" not in res.output
    [line] = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert line.startswith("Error: unexpected RuntimeError: something nobody expected xxx")
    assert "more characters" in line and "test_safety.py, line" in line
    assert "MSSBENCH_DEBUG=1" in line and len(line) < 1000
    monkeypatch.setenv("MSSBENCH_DEBUG", "1")
    res = CliRunner().invoke(main, tiny_run_args(tmp_path / "runs", 1))
    assert isinstance(res.exception, RuntimeError)
