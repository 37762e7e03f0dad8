"""The out-of-vocabulary probe of the dataset conformance suite (``tags["oov_probe"]``).

The user's KuaiRand files need not be at hand when the suite runs (only the prepared cache is),
and ``prepare`` only codes each value's text: vocabularies are fitted on the train split at load
time. So the probe copies the prepared cache with one test row's ``video_type`` set to the code
of a text no KuaiRand row has; loading the copy must encode it as 0. ``video_type`` is no part
of either split key (date; user and video), so the row stays in the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mssbench.data import dataset_dir, manifest_meta, read_cache, write_cache
from mssbench.errors import DataError
from mssbench_kuairand.loader import (
    CACHE_FORMAT,
    CACHE_VERSION,
    LAYOUTS,
    _codes,
    missing_message,
    split_codes,
)

__all__ = ["PLANTED_FIELD", "PLANTED_TEXT", "oov_probe"]

PLANTED_FIELD = "video_type"
PLANTED_TEXT = "planted-oov-probe"
_TEST = 2


def oov_probe(dataset: str, workdir: Path, options: dict[str, Any]):
    """Write the planted copy of ``dataset``'s cache under ``workdir``; say where the cell lies.

    Args:
        dataset: ``kuairand-pure`` or ``kuairand-1k``.
        workdir: An empty directory the probe may write to.
        options: The load options of the dataset under test (``data_dir``).

    Returns:
        An :class:`~mssbench.testing.OovProbe` whose options read the planted cache.
    """
    from mssbench.testing import OovProbe

    source = dataset_dir(dataset, str(options.get("data_dir", "") or "") or None)
    manifest, arrays = read_cache(source, cache_format=CACHE_FORMAT, version=CACHE_VERSION,
                                  missing=missing_message(dataset))  # fmt: skip
    cols = {k: np.array(v) for k, v in arrays["all"].items()}
    codes = split_codes(LAYOUTS[manifest["layout"]], cols)
    in_test = np.flatnonzero(codes == _TEST)
    if not in_test.size:
        raise DataError(f"{dataset}: {source} has no test rows to plant the probe in")
    # A test row whose value occurs in train: the probe's 0 is then the planted value's alone.
    seen = np.isin(cols[PLANTED_FIELD][in_test], cols[PLANTED_FIELD][codes == 0])
    row = int(np.argmax(seen))
    cols[PLANTED_FIELD][in_test[row]] = _codes(np.array([PLANTED_TEXT]))[0]
    write_cache(workdir / "cache", {"all": cols}, manifest_meta(manifest),
                cache_format=CACHE_FORMAT, version=CACHE_VERSION)  # fmt: skip
    return OovProbe(
        options={"data_dir": str(workdir / "cache")}, split="test", row=row, field=PLANTED_FIELD
    )
