"""OMoE model plugin (``omoe``)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

#: MTReclib's AliExpress configuration (``main.py``), the same as ``mmoe``'s.
DEFAULTS = {
    "embed_dim": 128,
    "n_experts": 8,
    "expert_hidden": [512, 256],
    "tower_hidden": [128, 64],
    "dropout": 0.2,
    "scenario_towers": True,
    "scenario_as_feature": False,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "n_experts": POSITIVE,
    "expert_hidden": WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((16, 32, 64, 128)),
    "n_experts": IntRange(2, 8),
    "expert_hidden": Widths(layers=(1, 2), widths=(64, 128, 256, 512)),
    "tower_hidden": Widths(layers=(1, 2), widths=(32, 64, 128)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``omoe``."""
    return [
        ModelSpec(
            name="omoe",
            summary="OMoE: one gate shared by all tasks (one per scenario), tower per "
            "(scenario, task)",
            build=lazy("mssbench_omoe.model:OMoE"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Ma et al., Modeling Task Relationships in Multi-task Learning with "
            "Multi-gate Mixture-of-Experts (one-gate baseline), KDD 2018, "
            "https://doi.org/10.1145/3219819.3220007",
            check_params={"embed_dim": 8, "expert_hidden": [32, 16], "tower_hidden": [16]},
            tags={"scenario_handling": "scenario-specific gate (shared by tasks) and towers"},
        )
    ]
