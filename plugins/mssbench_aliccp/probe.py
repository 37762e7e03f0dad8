"""The out-of-vocabulary probe of the dataset conformance suite (``tags["oov_probe"]``).

The user's Ali-CCP files need not be at hand when the suite runs (only the prepared cache is),
and vocabularies are fitted on the train split at load time, whatever the layout. The cache
holds the three splits apart, so the probe copies it with one sparse id of a test row set to an
id no row has; loading the copy must encode it as 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mssbench.data import SPLITS, dataset_dir, manifest_meta, read_cache, write_cache
from mssbench.errors import DataError
from mssbench_aliccp.loader import CACHE_FORMAT, CACHE_VERSION, DATASET, missing_message

__all__ = ["oov_probe"]


def oov_probe(workdir: Path, options: dict[str, Any]):
    """Write the planted copy of the Ali-CCP cache under ``workdir``; say where the cell lies.

    Args:
        workdir: An empty directory the probe may write to.
        options: The load options of the dataset under test (``data_dir``).

    Returns:
        An :class:`~mssbench.testing.OovProbe` whose options read the planted cache.
    """
    from mssbench.testing import OovProbe

    source = dataset_dir(DATASET, str(options.get("data_dir", "") or "") or None)
    manifest, arrays = read_cache(source, cache_format=CACHE_FORMAT, version=CACHE_VERSION,
                                  missing=missing_message())  # fmt: skip
    splits = {s: {k: np.array(v) for k, v in arrays[s].items()} for s in SPLITS}
    ids = splits["test"]["ids"]  # [N, F]
    if not len(ids):
        raise DataError(f"{DATASET}: {source} has no test rows to plant the probe in")
    train = splits["train"]["ids"]
    # A test row and field whose id occurs in train: the probe's 0 is then the planted id's alone
    # (AITM's test users never occur in its train, so the field is not always the first).
    seen = np.stack([np.isin(ids[:, j], train[:, j]) for j in range(ids.shape[1])])  # [F, N]
    col = int(np.argmax(seen.any(1)))
    row = int(np.argmax(seen[col]))
    ids[row, col] = max(int(splits[s]["ids"][:, col].max(initial=0)) for s in SPLITS) + 1
    write_cache(workdir / "cache", splits, manifest_meta(manifest),
                cache_format=CACHE_FORMAT, version=CACHE_VERSION)  # fmt: skip
    return OovProbe(
        options={"data_dir": str(workdir / "cache")},
        split="test",
        row=row,
        field=manifest["fields"][col],
    )
