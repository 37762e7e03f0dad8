"""AliExpress prepare under kill -9, and numeric cells outside [0, 1] counted in the manifest."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mssbench_aliexpress import ingest, loader
from test_aliexpress import TRAIN, _edit_line, _set, make_source, quiet

from mssbench.errors import DataError

ROOT = Path(__file__).resolve().parents[1]

#: Runs prepare in a child that kills itself with SIGKILL at a chosen point.
CHILD = """
import os, signal, sys
from pathlib import Path
import mssbench.data.cache as cache
import mssbench.io as mio
from mssbench_aliexpress import ingest

src, dest, where = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
if where == "between-renames":
    real = os.rename
    def rename(a, b):
        real(a, b)
        if ".old-" in str(b):
            os.kill(os.getpid(), signal.SIGKILL)
    mio.os.rename = rename
else:
    real_write = cache._write_all
    calls = {"n": 0}
    def write(f, data):
        calls["n"] += 1
        if calls["n"] > 20:
            os.kill(os.getpid(), signal.SIGKILL)
        real_write(f, data)
    cache._write_all = write
ingest.prepare(src, dest, lambda m: None)
"""


def _killed_prepare(tmp_path: Path, src: Path, dest: Path, where: str) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script), str(src), str(dest), where],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr


def test_kill_9_during_prepare_leaves_nothing_that_loads(tmp_path):
    src = make_source(tmp_path / "src", "tianchi-csv", countries=("NL",))
    dest = tmp_path / "cache"
    _killed_prepare(tmp_path, src, dest, "while-writing")
    assert not dest.exists()
    assert [p.name for p in tmp_path.glob(".cache.partial-*")]  # the killed work folder
    with pytest.raises(DataError, match="unfinished prepare"):
        loader.load({"data_dir": str(dest)})
    ingest.prepare(src, dest, quiet)  # the next prepare cleans up and succeeds
    assert not list(tmp_path.glob(".cache.*"))
    assert len(loader.load({"data_dir": str(dest)}).test) == 200


def test_kill_9_while_writing_keeps_the_previous_cache(tmp_path):
    src = make_source(tmp_path / "src", "tianchi-csv", countries=("NL",))
    dest = tmp_path / "cache"
    ingest.prepare(src, dest, quiet)
    before = (dest / ingest.MANIFEST).read_bytes()
    _killed_prepare(tmp_path, src, dest, "while-writing")
    assert (dest / ingest.MANIFEST).read_bytes() == before
    assert len(loader.load({"data_dir": str(dest)}).test) == 200


@pytest.mark.parametrize("then", ["load", "prepare"])
def test_kill_9_between_the_renames_of_the_swap_is_recovered(tmp_path, then):
    nl = make_source(tmp_path / "nl", "tianchi-csv", countries=("NL",))
    es = make_source(tmp_path / "es", "tianchi-csv", countries=("ES",))
    dest = tmp_path / "cache"
    ingest.prepare(nl, dest, quiet)
    before = (dest / ingest.MANIFEST).read_bytes()
    _killed_prepare(tmp_path, es, dest, "between-renames")
    # The intermediate state: no cache, the previous one renamed aside.
    assert not dest.exists() and list(tmp_path.glob(".cache.old-*"))
    if then == "load":
        data = loader.load({"data_dir": str(dest)})
        assert len(data.test) == 200
        assert (dest / ingest.MANIFEST).read_bytes() == before
        # Only the killed work folder is left, for the next prepare to remove.
        assert [p.name.split("-")[0] for p in tmp_path.glob(".cache.*")] == [".cache.partial"]
    else:  # a new prepare keeps NL from the recovered cache and adds ES
        ingest.prepare(es, dest, quiet)
        manifest = json.loads((dest / ingest.MANIFEST).read_text())
        assert sorted(manifest["countries"]) == ["ES", "NL"]
        assert not list(tmp_path.glob(".cache.*"))


def _out_of_range(dest: Path) -> int:
    return sum(
        int(np.count_nonzero((a < 0) | (a > 1)))
        for a in (np.load(dest / s / "numeric.npy") for s in ingest.SPLITS)
    )


def test_numeric_cells_outside_0_1_are_counted(tmp_path):
    plain = make_source(tmp_path / "plain", "processed", countries=("NL",))
    ingest.prepare(plain, tmp_path / "a", quiet)
    base = json.loads((tmp_path / "a" / ingest.MANIFEST).read_text())
    base_count = sum(base["countries"]["NL"][s]["numeric_out_of_range"] for s in ingest.SPLITS)
    assert base_count == _out_of_range(tmp_path / "a")

    # Line 3 of train.csv is the second data row; column 30 is numerical_13.
    original = float(TRAIN[1][29])
    assert 0 <= original <= 1
    edit = _edit_line("train", 3, _set(30, "7.5"))
    edited = make_source(tmp_path / "edited", "processed", countries=("NL",), edit=edit)
    ingest.prepare(edited, tmp_path / "b", quiet)
    m = json.loads((tmp_path / "b" / ingest.MANIFEST).read_text())
    count = sum(m["countries"]["NL"][s]["numeric_out_of_range"] for s in ingest.SPLITS)
    assert count == base_count + 1 == _out_of_range(tmp_path / "b")
