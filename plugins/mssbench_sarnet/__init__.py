"""SAR-Net model plugin (``sarnet``)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

#: Expert counts are Scenario-Wise-Rec's SAR-Net defaults (8 shared, 2 per scenario); the
#: paper's values are not known to us; widths are ours.
DEFAULTS = {
    "embed_dim": 16,
    "attention_dim": 16,
    "n_shared_experts": 8,
    "n_specific_experts": 2,
    "expert_hidden": [64],
    "tower_hidden": [32, 32],
    "dropout": 0.0,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "attention_dim": POSITIVE,
    "n_shared_experts": POSITIVE,
    "n_specific_experts": NON_NEGATIVE,
    "expert_hidden": WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "n_shared_experts": IntRange(2, 8),
    "n_specific_experts": IntRange(1, 4),
    "expert_hidden": Widths(layers=(1, 2), widths=(32, 64, 128)),
    "tower_hidden": Widths(layers=(1, 2), widths=(16, 32, 64)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``sarnet``."""
    return [
        ModelSpec(
            name="sarnet",
            summary="SAR-Net (tabular adaptation: scenario-aware attention over fields, no "
            "debias network): scenario-specific transfer, shared and per-scenario experts",
            build=lazy("mssbench_sarnet.model:SARNet"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Shen et al., SAR-Net: A Scenario-Aware Ranking Network for Personalized "
            "Fair Recommendation in Hundreds of Travel Scenarios, CIKM 2021, "
            "https://arxiv.org/abs/2110.06475",
            check_params={
                "embed_dim": 4,
                "attention_dim": 4,
                "n_shared_experts": 2,
                "expert_hidden": [8],
                "tower_hidden": [8],
            },
            tags={
                "scenario_handling": "scenario-query attention over the fields, scenario-specific "
                "scale and shift of the input, per-scenario experts and gates"
            },
        )
    ]
