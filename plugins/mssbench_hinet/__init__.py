"""HiNet model plugin (``hinet``)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

#: The official code's defaults (mrchor/HiNet ``src/HiNet.py`` flags) except ``embed_dim`` (32
#: there; 16 here as for the other models, ``mssbench.nn.FeatureEncoder``).
DEFAULTS = {
    "embed_dim": 16,
    "n_shared_subexperts": 5,
    "n_specific_subexperts": 5,
    "subexpert_hidden": [128, 64],
    "san_hidden": [128, 64],
    "n_specific_experts": 2,
    "n_shared_experts": 2,
    "expert_hidden": [128, 64],
    "tower_hidden": [128, 64],
    "dropout": 0.5,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "n_shared_subexperts": POSITIVE,
    "n_specific_subexperts": NON_NEGATIVE,
    "subexpert_hidden": WIDTHS,
    "san_hidden": OPTIONAL_WIDTHS,
    "n_specific_experts": NON_NEGATIVE,
    "n_shared_experts": POSITIVE,
    "expert_hidden": WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "n_shared_subexperts": IntRange(2, 5),
    "n_specific_subexperts": IntRange(2, 5),
    "expert_hidden": Widths(layers=(1, 2), widths=(64, 128)),
    "tower_hidden": Widths(layers=(1, 2), widths=(64, 128)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``hinet``."""
    return [
        ModelSpec(
            name="hinet",
            summary="HiNet: scenario extraction (shared and scenario-specific sub-expert "
            "modules, scenario-aware attention) then a CGC per (scenario, task)",
            build=lazy("mssbench_hinet.model:HiNet"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Zhou et al., HiNet: Novel Multi-Scenario & Multi-Task Learning with "
            "Hierarchical Information Extraction, ICDE 2023, https://arxiv.org/abs/2303.06095",
            check_params={
                "embed_dim": 4,
                "n_shared_subexperts": 2,
                "n_specific_subexperts": 2,
                "subexpert_hidden": [8],
                "san_hidden": [8],
                "expert_hidden": [8],
                "tower_hidden": [8],
                "dropout": 0.1,
            },
            tags={
                "scenario_handling": "scenario-specific sub-expert modules, attention over the "
                "other scenarios' representations, gates and towers per (scenario, task)"
            },
        )
    ]
