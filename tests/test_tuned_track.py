"""leaderboards/tuned_track.sh at its smoke size: tuned records on their own page, resumable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mssbench.leaderboard import page_track, plan_pages
from mssbench.records import load_records, read_record_file, verify_record

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "leaderboards" / "tuned_track.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _track(studies: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "TINY_STUDIES": str(studies),
           "TINY_OUT": str(out)}  # fmt: skip
    return subprocess.run(
        ["bash", str(SCRIPT), "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tuned_track_tunes_reruns_over_seeds_and_resumes(tmp_path):
    studies, out = tmp_path / "studies", tmp_path / "runs"
    first = _track(studies, out)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 trials x 1024 rows per trial" in first.stdout
    paths = sorted(out.glob("*.json"))
    assert len(paths) == 2
    for path in paths:
        record = verify_record(read_record_file(path), str(path))
        assert record["config"]["tuned_from"] == "mmoe"
        assert record["config"]["tuning_budget"] == {"trials": 2, "samples_per_trial": 1024}
    trials, _ = load_records(studies / "mmoe" / "runs", trials=True)
    assert trials and all("test" not in r for r in trials)  # tuning never read the test split
    records, _ = load_records(out)
    (page,) = plan_pages(records)
    assert page.tuned and page.directory.endswith("--tuned") and page_track(records) == "tuned, CPU"

    again = _track(studies, out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        "2 already finished" in again.stdout + again.stderr and len(list(out.glob("*.json"))) == 2
    )
