"""Data-parallel training under torchrun (gloo, 2 CPU processes) equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mssbench.runners.distributed import World, launched_by_torchrun

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        *args,
    ]


@given(n=st.integers(0, 500), size=st.integers(1, 8))
def test_shards_of_a_batch_cover_it_once_in_order(n: int, size: int) -> None:
    rows = torch.randperm(n) if n else torch.zeros(0, dtype=torch.long)
    parts = [World(rank=r, size=size).shard(rows) for r in range(size)]
    assert torch.equal(torch.cat(parts), rows)
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1
    ranges = [World(rank=r, size=size).shard_range(n) for r in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def test_single_process_is_not_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not launched_by_torchrun()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_by_torchrun()


def test_two_gloo_processes_train_like_one(tmp_path: Path) -> None:
    """Same global batches, gradients averaged, predictions gathered: the same weights,
    validation history and test logits as a single process, up to float summation order."""
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    subprocess.run([sys.executable, str(WORKER), str(single)], check=True, env=_env())
    subprocess.run(_torchrun(str(WORKER), str(ddp)), check=True, env=_env(), cwd=tmp_path)
    a, b = torch.load(single), torch.load(ddp)
    assert a["train_samples"] == b["train_samples"] == 2 * 1024
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["test_logits"], b["test_logits"], rtol=1e-4, atol=1e-4)
    assert b["test_logits"].shape == (257, 2)  # every row, gathered in order
    for ha, hb in zip(a["history"], b["history"]):
        for metric, value in ha["valid"].items():
            assert value == pytest.approx(hb["valid"][metric], abs=2e-4), metric


def test_uncertainty_weighting_under_ddp_trains_like_one_process(tmp_path: Path) -> None:
    """The log-variances' gradients are averaged over the ranks like the model's."""
    single, ddp = tmp_path / "single.pt", tmp_path / "ddp.pt"
    worker = [str(WORKER)]
    subprocess.run([sys.executable, *worker, str(single), "uncertainty"], check=True, env=_env())
    subprocess.run(
        _torchrun(*worker, str(ddp), "uncertainty"), check=True, env=_env(), cwd=tmp_path
    )
    a, b = torch.load(single), torch.load(ddp)
    assert not torch.equal(a["balancer"]["log_vars"], torch.zeros(2))
    torch.testing.assert_close(
        a["balancer"]["log_vars"], b["balancer"]["log_vars"], rtol=1e-4, atol=1e-5
    )
    for key in a["state"]:
        torch.testing.assert_close(a["state"][key], b["state"][key], rtol=1e-4, atol=1e-5)


def test_torchrun_refuses_a_balancer_that_needs_per_task_gradients(tmp_path: Path) -> None:
    cmd = _torchrun(
        "-m",
        "mssbench",
        "run",
        "--plugin",
        "mssbench.testing.plugin",
        "-m",
        "shared_bottom",
        "-d",
        "tiny-synth",
        "--epochs",
        "1",
        "--balancer",
        "pcgrad",
        "--no-progress",
        "--out",
        str(tmp_path / "runs"),
    )
    proc = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "--balancer pcgrad cannot train under torchrun" in proc.stdout + proc.stderr


def test_torchrun_mssbench_run_writes_one_record(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cmd = _torchrun(
        "-m",
        "mssbench",
        "run",
        "--plugin",
        "mssbench.testing.plugin",
        "-m",
        "shared_bottom",
        "-d",
        "tiny-synth",
        "-p",
        "embed_dim=4",
        "-p",
        "bottom_hidden=8",
        "-p",
        "tower_hidden=4",
        "--epochs",
        "2",
        "--batch-size",
        "128",
        "--no-progress",
        "--out",
        str(out),
    )
    proc = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = sorted(out.glob("*.json"))
    assert len(records) == 1, records
    rec = json.loads(records[0].read_text())
    assert rec["config"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert rec["training"]["train_samples"] == 2 * 2000  # every row once per epoch, globally
    assert rec["dataset"]["rows"]["test"] == 500
    assert proc.stdout.count("Test metrics:") == 1  # rank 0 alone reports
    assert not list((out / ".partial").glob("*.pt"))
