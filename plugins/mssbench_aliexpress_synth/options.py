"""The registered name and options of ``aliexpress-synth`` (no torch: read at registration)."""

from __future__ import annotations

from typing import Any, Mapping

from mssbench_aliexpress.schema import COUNTRIES

NAME = "aliexpress-synth"
#: Options of the registered dataset (``-D key=value``).
DEFAULT_OPTIONS: Mapping[str, Any] = {
    "n_rows": 500_000,
    "seed": 0,
    "scenarios": ",".join(COUNTRIES),
    "cache": "",
    "cvr_scale": 4.0,
}
