"""The registered name and options of ``aliexpress-synth`` (no torch: read at registration)."""

from __future__ import annotations

from typing import Any, Mapping

from mssbench_aliexpress.schema import COUNTRIES

NAME = "aliexpress-synth"
#: Defaults of the sharing design (``SynthConfig.small_size``, ``small_train``, ``country_dev``,
#: ``conflict``, ``task_share``; the dataset card explains them).
SHARING_DEFAULTS: Mapping[str, Any] = {
    "small_size": 1.0,
    "small_train": 0.1,
    "country_dev": 0.1,
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
#: What a run record made before an option existed ran on (``DatasetSpec.earlier_options``):
#: ``small_train`` came after generator version 2, whose data is ``small_train = 1``; the other
#: sharing options came with version 2, and no value of them gives version 1's data.
EARLIER_OPTIONS: Mapping[str, Any] = {
    "small_train": 1.0,
    **{key: None for key in SHARING_DEFAULTS if key != "small_train"},
}
