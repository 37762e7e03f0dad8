"""leaderboards/gpu_track.sh at its CPU smoke size: records that verify, a rerun that resumes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mssbench.records import read_record_file, verify_record

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "leaderboards" / "gpu_track.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _track(out: Path, **env: str) -> subprocess.CompletedProcess:
    full = {
        **os.environ,
        "PYTHON": sys.executable,
        "OUT": str(out),
        "MODELS": "shared_bottom",
        "SEEDS": "2",
        "TINY_ROWS": "3000",
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT), "--tiny"], cwd=ROOT, env=full, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def test_the_track_writes_verified_records_seed_by_seed_and_resumes(tmp_path):
    out = tmp_path / "track"
    first = _track(out)
    assert first.returncode == 0, first.stdout + first.stderr
    records = sorted(out.glob("*.json"))
    assert len(records) == 2
    seeds = set()
    for path in records:
        record = verify_record(read_record_file(path), str(path))
        assert record["status"] == "finished" and record["dataset"]["name"] == "aliexpress-synth"
        assert record["config"]["data_options"]["n_rows"] == 3000
        seeds.add(record["config"]["seed"])
    assert seeds == {0, 1}
    assert first.stdout.index("== seed 0") < first.stdout.index("== seed 1")

    again = _track(out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 to run" in again.stdout + again.stderr and len(list(out.glob("*.json"))) == 2


def test_a_spent_time_limit_stops_before_the_next_seed_and_says_how_to_continue(tmp_path):
    result = _track(tmp_path / "track", LIMIT="0")
    assert result.returncode == 124
    assert "rerun to continue" in result.stdout and not list((tmp_path / "track").glob("*.json"))
