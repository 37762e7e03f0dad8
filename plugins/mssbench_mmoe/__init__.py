"""MMoE model plugin."""

from mssbench import ModelSpec, hookimpl
from mssbench.lazy import lazy

DEFAULTS = {
    "embed_dim": 128,
    "n_experts": 8,
    "expert_hidden": [512, 256],
    "tower_hidden": [128, 64],
    "dropout": 0.2,
    "mode": "st",
    "scenario_as_feature": False,
}


@hookimpl
def mssbench_register_models():
    """Register ``mmoe``."""
    return [
        ModelSpec(
            name="mmoe",
            summary="MMoE with one gate and tower per (scenario, task) (MMoE-ST)",
            build=lazy("mssbench_mmoe.model:MMoE"),
            defaults=DEFAULTS,
            paper="Ma et al., Modeling Task Relationships in Multi-task Learning with "
            "Multi-gate Mixture-of-Experts, KDD 2018",
            check_params={"embed_dim": 8, "expert_hidden": [32, 16], "tower_hidden": [16]},
            tags={"scenario_handling": "scenario-specific gates and towers"},
        )
    ]
