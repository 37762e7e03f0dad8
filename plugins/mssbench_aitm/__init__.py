"""AITM model plugin (``aitm``)."""

from mssbench import Choice, FloatRange, ModelSpec, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE

#: The official code's configuration (``xidongbo/AITM``, ``AITM.py``): embedding 5, towers
#: 128-64-32, keep probabilities 0.9/0.7/0.7, label-constraint weight 0.6.
DEFAULTS = {
    "embed_dim": 5,
    "tower_hidden": [128, 64, 32],
    "dropout": [0.1, 0.3, 0.3],
    "calibrator_weight": 0.6,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
    "calibrator_weight": NON_NEGATIVE,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((5, 8, 16)),
    "calibrator_weight": FloatRange(0.1, 1.0),
}


@hookimpl
def mssbench_register_models():
    """Register ``aitm``."""
    return [
        ModelSpec(
            name="aitm",
            summary="AITM: task towers with adaptive information transfer along the conversion "
            "chain and the behavioural expectation calibrator; scenario id as a feature",
            build=lazy("mssbench_aitm.model:AITM"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Xi et al., Modeling the Sequential Dependence among Audience Multi-step "
            "Conversions with Multi-task Learning in Targeted Display Advertising, KDD 2021, "
            "https://doi.org/10.1145/3447548.3467071",
            check_params={"embed_dim": 4, "tower_hidden": [16, 8], "dropout": [0.1, 0.1]},
            tags={
                "heads": ["direct"],
                "scenario_handling": "scenario as input feature",
            },
        )
    ]
