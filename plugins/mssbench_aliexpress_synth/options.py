"""The registered name and options of ``aliexpress-synth`` (no torch: read at registration)."""

from __future__ import annotations

from typing import Any, Mapping

from mssbench_aliexpress.schema import COUNTRIES

NAME = "aliexpress-synth"
#: Defaults of the sharing design (``SynthConfig.small_size``, ``small_train``, ``country_dev``,
#: ``conflict``, ``task_share``; the dataset card explains them).
SHARING_DEFAULTS: Mapping[str, Any] = {
    "small_size": 0.5,
    "small_train": 1.0,
    "country_dev": 0.35,
    "conflict": 1,
    "task_share": 0.7,
}
#: Options of the registered dataset (``-D key=value``).
DEFAULT_OPTIONS: Mapping[str, Any] = {
    "n_rows": 500_000,
    "seed": 0,
    "scenarios": ",".join(COUNTRIES),
    "cache": "",
    "cvr_scale": 4.0,
    **SHARING_DEFAULTS,
}
