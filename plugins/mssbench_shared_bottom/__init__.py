"""Shared-bottom model plugin."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
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


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((16, 32, 64, 128)),
    "bottom_hidden": Widths(layers=(1, 3), widths=(128, 256, 512)),
    "tower_hidden": Widths(layers=(1, 2), widths=(32, 64, 128)),
    "dropout": FloatRange(0.0, 0.5),
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
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Caruana, Multitask Learning, Machine Learning 28, 1997",
            check_params={"embed_dim": 8, "bottom_hidden": [32, 16], "tower_hidden": [16]},
            tags={"scenario_handling": "scenario as input feature"},
        )
    ]
