"""PLE model plugin."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

DEFAULTS = {
    "embed_dim": 128,
    "level_widths": [512, 256],
    "n_specific_experts": 4,
    "n_shared_experts": 4,
    "tower_hidden": [128, 64],
    "dropout": 0.2,
    "scenario_towers": False,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "level_widths": WIDTHS,
    "n_specific_experts": NON_NEGATIVE,
    "n_shared_experts": POSITIVE,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((16, 32, 64, 128)),
    "level_widths": Widths(layers=(1, 2), widths=(128, 256, 512)),
    "n_specific_experts": IntRange(1, 4),
    "n_shared_experts": IntRange(1, 4),
    "tower_hidden": Widths(layers=(1, 2), widths=(32, 64, 128)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``ple``."""
    return [
        ModelSpec(
            name="ple",
            summary="PLE (CGC levels, torch-rechub routing); scenario id as a feature",
            build=lazy("mssbench_ple.model:PLE"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Tang et al., Progressive Layered Extraction (PLE): A Novel Multi-Task "
            "Learning (MTL) Model for Personalized Recommendations, RecSys 2020, "
            "https://doi.org/10.1145/3383313.3412236",
            check_params={
                "embed_dim": 8,
                "level_widths": [16, 8],
                "n_specific_experts": 2,
                "n_shared_experts": 2,
                "tower_hidden": [8],
            },
            tags={"scenario_handling": "scenario as input feature"},
        )
    ]
