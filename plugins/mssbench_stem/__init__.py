"""STEM model plugin (``stem``)."""

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS

#: The official TiktokLarge configuration (``config/model_config.yaml``, ``STEM_TiktokLarge``).
DEFAULTS = {
    "embed_dim": 16,
    "n_layers": 1,
    "n_specific_experts": 1,
    "n_shared_experts": 8,
    "expert_hidden": [512, 512, 512],
    "gate_hidden": [128, 64],
    "tower_hidden": [128, 64],
    "dropout": 0.0,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "n_layers": POSITIVE,
    "n_specific_experts": NON_NEGATIVE,
    "n_shared_experts": POSITIVE,
    "expert_hidden": WIDTHS,
    "gate_hidden": OPTIONAL_WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "n_shared_experts": IntRange(2, 8),
    "expert_hidden": Widths(layers=(1, 3), widths=(128, 256, 512)),
    "tower_hidden": Widths(layers=(1, 2), widths=(64, 128)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``stem``."""
    return [
        ModelSpec(
            name="stem",
            summary="STEM: shared and task-specific embeddings, gates that read every task's "
            "experts but train only their own (all forward, task-specific backward); "
            "scenario id as a feature",
            build=lazy("mssbench_stem.model:STEM"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Su et al., STEM: Unleashing the Power of Embeddings for Multi-task "
            "Recommendation, AAAI 2024, https://doi.org/10.1609/aaai.v38i8.28749",
            check_params={
                "embed_dim": 4,
                "n_shared_experts": 2,
                "expert_hidden": [16],
                "gate_hidden": [8],
                "tower_hidden": [8],
            },
            tags={"scenario_handling": "scenario as input feature"},
        )
    ]
