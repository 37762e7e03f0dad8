"""Cross-stitch model plugin."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE, PROBABILITY, WIDTHS

DEFAULTS = {
    "embed_dim": 16,
    "input_width": 256,
    "column_hidden": [256, 128],
    "tower_hidden": [64],
    "dropout": 0.2,
    "alpha_self": 0.9,
    "alpha_per_unit": False,
    "alpha_lr_scale": 100.0,
    "scenario_towers": False,
    "scenario_as_feature": True,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "input_width": POSITIVE,
    "column_hidden": WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
    "alpha_self": PROBABILITY,
    "alpha_lr_scale": POSITIVE,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "column_hidden": Widths(layers=(1, 2), widths=(64, 128, 256)),
    "tower_hidden": Widths(layers=(1, 1), widths=(32, 64, 128)),
    "dropout": FloatRange(0.0, 0.5),
    "alpha_self": FloatRange(0.5, 0.99),
}


@hookimpl
def mssbench_register_models():
    """Register ``cross_stitch``."""
    return [
        ModelSpec(
            name="cross_stitch",
            summary="Cross-stitch networks: one MLP column per task; scenario id as a feature",
            build=lazy("mssbench_cross_stitch.model:CrossStitch"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Misra et al., Cross-stitch Networks for Multi-task Learning, CVPR 2016, "
            "https://arxiv.org/abs/1604.03539",
            check_params={
                "embed_dim": 8,
                "input_width": 16,
                "column_hidden": [16, 8],
                "tower_hidden": [8],
            },
            tags={"scenario_handling": "scenario as input feature"},
        )
    ]
