"""The out-of-vocabulary probe of the dataset conformance suite (``tags["oov_probe"]``).

A user's raw Tianchi files are not at hand when the suite runs (only the prepared cache is), so
the probe writes a small source of its own in the processed layout, two countries of seeded
rows in which one test row carries a ``categorical_1`` code that no other row has, and runs
``prepare`` on it. Loading that cache goes through the same ingestion and encoding as a real
one; vocabularies fitted on the train split only must encode the planted code as 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mssbench_aliexpress.ingest import PROCESSED_COLUMNS, prepare
from mssbench_aliexpress.schema import CATEGORICAL, CODE_COUNTS, NUMERIC

__all__ = ["PLANTED_CODE", "PLANTED_FIELD", "oov_probe"]

PLANTED_FIELD = CATEGORICAL[0]
#: A code beyond the published code counts, so no generated row has it.
PLANTED_CODE = 999
#: Countries, rows per official train and test file, and the planted test row (first country).
COUNTRIES = ("NL", "ES")
TRAIN_ROWS, TEST_ROWS, PLANTED_ROW = 80, 20, 3


def _rows(rng: np.random.Generator, n: int, first_id: int) -> list[str]:
    """``n`` processed rows, one search page each, with codes below the published counts."""
    codes = np.stack([rng.integers(0, k, n) for k in CODE_COUNTS], 1)
    numeric = np.round(rng.random((n, len(NUMERIC))), 6)
    click = rng.random(n) < 0.3
    conversion = click & (rng.random(n) < 0.3)
    return [
        ",".join(
            [str(first_id + i), *map(str, codes[i]), *map(str, numeric[i])]
            + [str(int(click[i])), str(int(conversion[i]))]
        )
        for i in range(n)
    ]


def oov_probe(workdir: Path, options: dict[str, Any]):
    """Prepare the planted cache under ``workdir``; return where the planted cell lies.

    Args:
        workdir: An empty directory the probe may write to.
        options: The load options of the dataset under test (``memory`` is kept).

    Returns:
        An :class:`~mssbench.testing.OovProbe` whose options read the planted cache.
    """
    from mssbench.testing import OovProbe

    rng = np.random.default_rng(20261204)
    header = ",".join(PROCESSED_COLUMNS)
    for c, country in enumerate(COUNTRIES):
        folder = workdir / "source" / f"AliExpress_{country}"
        folder.mkdir(parents=True)
        train = _rows(rng, TRAIN_ROWS, 100_000 * c)
        test = _rows(rng, TEST_ROWS, 100_000 * c + 50_000)
        if c == 0:
            cells = test[PLANTED_ROW].split(",")
            cells[PROCESSED_COLUMNS.index(PLANTED_FIELD)] = str(PLANTED_CODE)
            test[PLANTED_ROW] = ",".join(cells)
        (folder / "train.csv").write_text("\n".join([header, *train]) + "\n")
        (folder / "test.csv").write_text("\n".join([header, *test]) + "\n")
    prepare(workdir / "source", workdir / "cache", lambda _line: None)
    return OovProbe(
        options={"data_dir": str(workdir / "cache"), "scenarios": ""},
        split="test",
        row=PLANTED_ROW,  # the test split holds the countries in order, the first one first
        field=PLANTED_FIELD,
    )
