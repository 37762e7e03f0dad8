"""Data layer shared by dataset plugins: public helpers every loader needs.

* where prepared data lives: :func:`data_root`, :func:`dataset_dir`;
* typed CSV reading with one-line errors naming file, line and column: :func:`read_csv`
  (:func:`iter_csv` block by block; :func:`stream_csv` from any byte stream, such as a member
  of a zip archive, parsed in a reader thread; :class:`ZipMemberStream` and :func:`open_zip`
  read archives, nested ones included, front to back and checked),
  and finding the input files a user brings: :func:`find_file`;
* deterministic splits: :func:`hash_split`, :func:`time_split`, :func:`time_boundaries`,
  :func:`ordered_split`, :func:`holdout_mask`, :func:`split_indices`;
* train-only vocabularies with the out-of-vocabulary id 0: :class:`Vocabulary`, fitted at once
  or from the counts :class:`CodeCounts` accumulates block by block;
* checksums and manifests: :func:`file_facts`, :func:`sha256_file`, :func:`write_json_atomic`;
* the columnar cache of a prepare step: :func:`write_cache`, :class:`CacheWriter` (block by
  block), :func:`read_cache`, :func:`manifest_meta` (to write a copy),
  :func:`remove_stale_partials`;
* from per-split columns to a ``LoadedDataset``: :class:`TabularLayout`,
  :func:`tabular_dataset`, :func:`split_columns`.

CONTRIBUTING.md ("Writing a dataset plugin") shows a complete plugin built on them.
"""

from __future__ import annotations

import os
from pathlib import Path

from mssbench.data.archive import ZipMemberStream, open_zip, zip_members
from mssbench.data.cache import (
    CacheWriter,
    manifest_meta,
    read_cache,
    remove_stale_partials,
    write_cache,
)
from mssbench.data.csvio import CsvTable, find_file, iter_csv, read_csv
from mssbench.data.manifest import file_facts, read_json, sha256_file, write_json_atomic
from mssbench.data.splits import (
    SPLITS,
    TEST,
    TRAIN,
    VALID,
    hash_buckets,
    hash_split,
    holdout_mask,
    ordered_split,
    split_indices,
    time_boundaries,
    time_split,
)
from mssbench.data.stream import (
    ByteSource,
    CountedStream,
    FileSource,
    StreamBlock,
    StreamLayout,
    stream_csv,
)
from mssbench.data.tabular import (
    TabularLayout,
    encode_splits,
    split_columns,
    tabular_dataset,
    take,
)
from mssbench.data.vocab import OOV, CodeCounts, Vocabulary

__all__ = [
    "OOV",
    "SPLITS",
    "TEST",
    "TRAIN",
    "VALID",
    "ByteSource",
    "CacheWriter",
    "CodeCounts",
    "CountedStream",
    "CsvTable",
    "FileSource",
    "StreamBlock",
    "StreamLayout",
    "TabularLayout",
    "Vocabulary",
    "ZipMemberStream",
    "data_root",
    "dataset_dir",
    "encode_splits",
    "file_facts",
    "find_file",
    "hash_buckets",
    "hash_split",
    "holdout_mask",
    "iter_csv",
    "manifest_meta",
    "open_zip",
    "ordered_split",
    "read_cache",
    "read_csv",
    "read_json",
    "remove_stale_partials",
    "sha256_file",
    "split_columns",
    "split_indices",
    "stream_csv",
    "tabular_dataset",
    "take",
    "time_boundaries",
    "time_split",
    "write_cache",
    "write_json_atomic",
    "zip_members",
]


def data_root() -> Path:
    """Root of prepared datasets.

    ``$MSSBENCH_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/mssbench``, else
    ``~/.cache/mssbench``.
    """
    if os.environ.get("MSSBENCH_DATA_DIR"):
        return Path(os.environ["MSSBENCH_DATA_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "mssbench"


def dataset_dir(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """Directory of dataset ``name``'s prepared files (``override`` wins when given)."""
    return Path(override).expanduser() if override else data_root() / name
