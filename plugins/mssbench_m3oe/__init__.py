"""M3oE model plugin (``m3oe``)."""

from mssbench import Choice, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import POSITIVE, WIDTHS

#: The official MovieLens configuration (``examples/run_movielens.py``): embeddings of 16,
#: ``fcn_dims = [512, 256, 256, 64]`` (STAR layer 512, bottom 256, experts 256-64), 4 shared
#: experts, every fusion weight initialised at 1.
DEFAULTS = {
    "embed_dim": 16,
    "star_hidden": [512, 256],
    "n_experts": 4,
    "expert_hidden": [256, 64],
    "fusion_init": 1.0,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "star_hidden": WIDTHS,
    "n_experts": POSITIVE,
    "expert_hidden": WIDTHS,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "star_hidden": Widths(layers=(2, 2), widths=(128, 256, 512)),
    "n_experts": IntRange(2, 6),
    "expert_hidden": Widths(layers=(2, 2), widths=(64, 128, 256)),
}


@hookimpl
def mssbench_register_models():
    """Register ``m3oe``."""
    return [
        ModelSpec(
            name="m3oe",
            summary="M3oE: STAR bottom, shared + per-scenario + per-task experts fused by "
            "learned weights, tower per (scenario, task); fusion weights trained jointly",
            build=lazy("mssbench_m3oe.model:M3oE"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Zhang et al., M3oE: Multi-Domain Multi-Task Mixture-of-Experts "
            "Recommendation Framework, SIGIR 2024, https://doi.org/10.1145/3626772.3657686",
            check_params={
                "embed_dim": 4,
                "star_hidden": [16, 12],
                "n_experts": 2,
                "expert_hidden": [12, 8],
            },
            tags={
                "scenario_handling": "per-scenario STAR weights, scenario experts, gates and "
                "towers; scenario id as a feature"
            },
        )
    ]
