"""Shared-bottom model plugin."""

from mssbench import ModelSpec, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

DEFAULTS = {
    "embed_dim": 128,
    "bottom_hidden": [512, 256],
    "tower_hidden": [128, 64],
    "dropout": 0.2,
    "scenario_towers": False,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "bottom_hidden": WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


@hookimpl
def mssbench_register_models():
    """Register ``shared_bottom``."""
    return [
        ModelSpec(
            name="shared_bottom",
            summary="Shared-bottom (hard parameter sharing); scenario id as a feature",
            build=lazy("mssbench_shared_bottom.model:SharedBottom"),
            version=2,
            defaults=DEFAULTS,
            constraints=CONSTRAINTS,
            paper="Caruana, Multitask Learning, Machine Learning 28, 1997",
            check_params={"embed_dim": 8, "bottom_hidden": [32, 16], "tower_hidden": [16]},
            tags={"scenario_handling": "scenario as input feature"},
        )
    ]
