"""The out-of-vocabulary probe of the dataset conformance suite (``tags["oov_probe"]``).

It writes a copy of the UCI test file in which one row that lands in the test split carries a
``country of birth self`` value that occurs nowhere else; vocabularies fitted on the train
split only must encode it as 0. Rows are split by a hash of their content, so the row is chosen
among those that still hash into the test split once the value is planted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mssbench.errors import DataError
from mssbench_census.loader import (
    COLUMNS,
    TEST_NAMES,
    TRAIN_NAMES,
    _read_bytes,
    default_data_dir,
    find_file,
    read_census_file,
    row_buckets,
)

__all__ = ["PLANTED_FIELD", "PLANTED_VALUE", "oov_probe"]

PLANTED_FIELD = "country of birth self"
PLANTED_VALUE = "Planted-OOV-probe"
#: First bucket of the test split of the UCI test file, by protocol.
TEST_BUCKET = {"bundled": 80, "official": 50}


def _data_dir(options: dict[str, Any]) -> Path:
    text = str(options.get("data_dir", "") or "")
    return Path(text).expanduser() if text else default_data_dir()


def oov_probe(workdir: Path, options: dict[str, Any]):
    """Write the planted copy under ``workdir``; return where the planted cell lies.

    Args:
        workdir: An empty directory the probe may write to.
        options: The load options of the dataset under test (``protocol``, ``data_dir``).

    Returns:
        An :class:`~mssbench.testing.OovProbe` whose options read ``workdir``.
    """
    from mssbench.testing import OovProbe

    protocol = str(options.get("protocol", "bundled"))
    if protocol not in TEST_BUCKET:
        raise DataError(f"census-income: unknown protocol {protocol!r}")
    source = _data_dir(options)
    test_file = find_file(source, TEST_NAMES)
    raw = read_census_file(test_file)
    planted = raw.frame.copy()
    planted[PLANTED_FIELD] = PLANTED_VALUE
    in_test = row_buckets(raw.frame) >= TEST_BUCKET[protocol]
    candidates = np.flatnonzero(row_buckets(planted) >= TEST_BUCKET[protocol])
    if not candidates.size:  # pragma: no cover - about one row in five qualifies
        raise DataError(f"census-income: no row of {test_file} can carry the probe")
    i = int(candidates[0])
    lines = _read_bytes(test_file)[0].decode("utf-8").split("\n")
    cells = lines[int(raw.lines[i]) - 1].split(",")
    cells[COLUMNS.index(PLANTED_FIELD)] = f" {PLANTED_VALUE}"
    lines[int(raw.lines[i]) - 1] = ",".join(cells)
    (workdir / TEST_NAMES[0]).write_text("\n".join(lines), encoding="utf-8")
    if protocol == "official":
        train = find_file(source, TRAIN_NAMES)
        (workdir / train.name).symlink_to(train.resolve())
    return OovProbe(
        options={"data_dir": str(workdir)},
        split="test",
        row=int(in_test[:i].sum()),
        field=PLANTED_FIELD,
    )
