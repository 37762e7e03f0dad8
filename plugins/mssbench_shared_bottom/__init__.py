"""Shared-bottom model plugin."""

from mssbench import ModelSpec, hookimpl
from mssbench.lazy import lazy

DEFAULTS = {
    "embed_dim": 128,
    "bottom_hidden": [512, 256],
    "tower_hidden": [128, 64],
    "dropout": 0.2,
    "scenario_towers": False,
}


@hookimpl
def mssbench_register_models():
    """Register ``shared_bottom``."""
    return [
        ModelSpec(
            name="shared_bottom",
            summary="Shared-bottom (hard parameter sharing); scenario id as a feature",
            build=lazy("mssbench_shared_bottom.model:SharedBottom"),
            defaults=DEFAULTS,
            paper="Caruana, Multitask Learning, Machine Learning 28, 1997",
            check_params={"embed_dim": 8, "bottom_hidden": [32, 16], "tower_hidden": [16]},
            tags={"scenario_handling": "scenario as input feature"},
        )
    ]
