"""The census loader, rewritten on the mssbench.data helpers, gives the same data as before.

The digests below were computed by the loader as it was before the rewrite (commit a5e559d,
its own ``_encode``) on the bundled UCI test file: every split's tensors (dtype, shape, bytes),
the schema and ``info`` (all but the file paths). Any change to them changes the data a run
sees and needs a protocol version bump instead of a new digest.
"""

from __future__ import annotations

import hashlib
import json

from mssbench_census import loader

BEFORE = {
    "bundled": "09ae0ed3e8b5d14e8d729a7a0414f04984e4042dd64e8680e5a491fa3c3d025f",
    # official protocol with the bundled test file standing in for the UCI train file
    "official": "42a8f4d8ba1ca9ec8bf3f11164ea91152d9e56944f153c2983eb3187f4b416af",
}


def digest(data) -> str:
    h = hashlib.sha256()
    for s in ("train", "valid", "test"):
        split = getattr(data, s)
        for f in ("categorical", "numeric", "scenario", "labels"):
            t = getattr(split, f)
            h.update(f"{s}/{f}/{t.dtype}/{tuple(t.shape)}".encode())
            h.update(t.numpy().tobytes())
    h.update(json.dumps(data.schema.to_dict(), sort_keys=True).encode())
    info = {k: v for k, v in data.info.items() if k != "files"}
    h.update(json.dumps(info, sort_keys=True).encode())
    return h.hexdigest()


def test_same_arrays_schema_and_info_as_before_the_rewrite():
    test = loader.default_data_dir() / "census-income.test.gz"
    assert digest(loader.load_files("bundled", test)) == BEFORE["bundled"]
    assert digest(loader.load_files("official", test, test)) == BEFORE["official"]
