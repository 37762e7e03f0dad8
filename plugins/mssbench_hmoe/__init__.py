"""HMoE model plugin (``hmoe``)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

#: Widths are MMLRec's HMoE defaults (the paper's are not known to us); embed_dim as §1.2.
DEFAULTS = {
    "embed_dim": 16,
    "n_experts": 4,
    "expert_hidden": [256, 128],
    "tower_hidden": [64],
    "dropout": 0.0,
    "label_space": True,
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
    "embed_dim": Choice((8, 16, 32)),
    "n_experts": IntRange(2, 8),
    "expert_hidden": Widths(layers=(1, 2), widths=(128, 256)),
    "tower_hidden": Widths(layers=(1, 1), widths=(32, 64)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``hmoe``."""
    return [
        ModelSpec(
            name="hmoe",
            summary="HMoE: MMoE gates and towers per (scenario, task), predictions of all "
            "scenarios combined by a label-space gate with other scenarios gradient-blocked",
            build=lazy("mssbench_hmoe.model:HMoE"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Li et al., Improving Multi-Scenario Learning to Rank in E-commerce by "
            "Exploiting Task Relationships in the Label Space, CIKM 2020, "
            "https://doi.org/10.1145/3340531.3412713",
            check_params={
                "embed_dim": 4,
                "n_experts": 3,
                "expert_hidden": [16, 8],
                "tower_hidden": [8],
            },
            tags={
                "scenario_handling": "gates and towers per (scenario, task); each scenario's "
                "prediction mixes all scenarios' predictions (others gradient-blocked)"
            },
        )
    ]
