"""M2M model plugin (``m2m``)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, POSITIVE, WIDTHS

#: The paper publishes no widths: these are ours (4 experts as in Scenario-Wise-Rec's M2M).
DEFAULTS = {
    "embed_dim": 16,
    "field_transformer_layers": 1,
    "n_heads": 2,
    "n_experts": 4,
    "expert_hidden": [128, 64],
    "meta_dim": 32,
    "meta_tower_layers": 2,
    "dropout": 0.0,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "field_transformer_layers": POSITIVE,
    "n_heads": POSITIVE,
    "n_experts": POSITIVE,
    "expert_hidden": WIDTHS,
    "meta_dim": POSITIVE,
    "meta_tower_layers": POSITIVE,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "n_experts": IntRange(2, 6),
    "expert_hidden": Widths(layers=(1, 2), widths=(64, 128)),
    "meta_dim": Choice((16, 32, 64)),
    "dropout": FloatRange(0.0, 0.3),
}


@hookimpl
def mssbench_register_models():
    """Register ``m2m``."""
    return [
        ModelSpec(
            name="m2m",
            summary="M2M: experts over field tokens, meta attention and residual meta towers "
            "whose weights are generated from the scenario",
            build=lazy("mssbench_m2m.model:M2M"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Zhang et al., Leaving No One Behind: A Multi-Scenario Multi-Task Meta "
            "Learning Approach for Advertiser Modeling, WSDM 2022, "
            "https://arxiv.org/abs/2201.06814",
            check_params={
                "embed_dim": 4,
                "n_experts": 3,
                "expert_hidden": [8],
                "meta_dim": 6,
                "meta_tower_layers": 1,
            },
            tags={
                "scenario_handling": "scenario embedding -> scenario knowledge that generates "
                "the meta attention's and the meta towers' weights"
            },
        )
    ]
