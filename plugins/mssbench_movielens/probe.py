"""The out-of-vocabulary probe of the dataset conformance suite (``tags["oov_probe"]``).

The user's GroupLens files need not be at hand when the suite runs (only the prepared cache
is), and vocabularies are fitted on the train split at load time, under either protocol. So
the probe copies the prepared cache with one test rating's ``zip`` (or ``occupation``) code set
to a code no user has; loading the copy must encode it as 0. Both are features of both
protocols and no part of either split rule (rating order; user and movie), so the rating stays
in the test split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mssbench.data import dataset_dir, manifest_meta, read_cache, write_cache
from mssbench.errors import DataError
from mssbench_movielens.loader import CACHE_FORMAT, CACHE_VERSION, missing_message, split_codes

__all__ = ["PLANTED_FIELDS", "oov_probe"]

#: Features of both protocols outside both split rules, tried in this order.
PLANTED_FIELDS = ("zip", "occupation")
_TEST = 2


def oov_probe(dataset: str, workdir: Path, options: dict[str, Any]):
    """Write the planted copy of ``dataset``'s cache under ``workdir``; say where the cell lies.

    Args:
        dataset: ``movielens-1m`` or ``movielens-100k``.
        workdir: An empty directory the probe may write to.
        options: The load options of the dataset under test (``protocol``, ``data_dir``).

    Returns:
        An :class:`~mssbench.testing.OovProbe` whose options read the planted cache.
    """
    from mssbench.testing import OovProbe

    source = dataset_dir(dataset, str(options.get("data_dir", "") or "") or None)
    manifest, arrays = read_cache(source, cache_format=CACHE_FORMAT, version=CACHE_VERSION,
                                  missing=missing_message(dataset))  # fmt: skip
    cols = {k: np.array(v) for k, v in arrays["all"].items()}
    protocol = str(options.get("protocol", "m3oe") or "m3oe")
    codes = split_codes(protocol, cols)
    in_test = np.flatnonzero(codes == _TEST)
    if not in_test.size:
        raise DataError(f"{dataset}: {source} has no test ratings to plant the probe in")
    # A test rating and field whose value occurs in train: the probe's 0 is then the planted
    # value's alone (in rating order the last users, hence their zip codes, may be new in test).
    train = codes == 0
    seen = np.stack([np.isin(cols[f][in_test], cols[f][train]) for f in PLANTED_FIELDS])
    field = PLANTED_FIELDS[int(np.argmax(seen.any(1)))]
    row = int(np.argmax(seen[PLANTED_FIELDS.index(field)]))
    cols[field][in_test[row]] = int(cols[field].max()) + 1
    write_cache(workdir / "cache", {"all": cols}, manifest_meta(manifest),
                cache_format=CACHE_FORMAT, version=CACHE_VERSION)  # fmt: skip
    return OovProbe(
        options={"data_dir": str(workdir / "cache")}, split="test", row=row, field=field
    )
