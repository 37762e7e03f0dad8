"""ESCM² model plugin (``escm2``)."""

from typing import Any, Mapping

from mssbench import Choice, FloatRange, IntRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import NON_NEGATIVE, OPTIONAL_WIDTHS, POSITIVE, WIDTHS, DatasetSchema

#: The official configuration (PaddleRec ``models/multitask/escm2/config_bigdata.yaml``).
DEFAULTS = {
    "embed_dim": 12,
    "n_experts": 8,
    "expert_hidden": [16],
    "tower_hidden": [8],
    "counterfactual": "dr",
    "counterfactual_weight": 0.5,
    "global_weight": 0.5,
    "max_weight": 15.0,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "n_experts": POSITIVE,
    "expert_hidden": WIDTHS,
    "tower_hidden": OPTIONAL_WIDTHS,
    "counterfactual_weight": NON_NEGATIVE,
    "global_weight": NON_NEGATIVE,
    "max_weight": POSITIVE,
}


def escm2_task_weights(schema: DatasetSchema, params: Mapping[str, Any]) -> list[float]:
    """``global_weight`` (``lambda_g``) on each conversion task implying a click task, else 1."""
    weights = [1.0] * schema.n_tasks
    for rel in schema.relations:
        weights[schema.task_index(rel.child)] = float(params["global_weight"])
    return weights
#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 12, 16)),
    "n_experts": IntRange(2, 8),
    "expert_hidden": Widths(layers=(1, 2), widths=(16, 32, 64)),
    "tower_hidden": Widths(layers=(1, 1), widths=(8, 16, 32)),
    "counterfactual_weight": FloatRange(0.1, 1.0),
    "global_weight": FloatRange(0.1, 1.0),
}


@hookimpl
def mssbench_register_models():
    """Register ``escm2``."""
    return [
        ModelSpec(
            name="escm2",
            summary="ESCM²: ESMM over an MMoE backbone with a counterfactual CVR risk "
            "(IPS or DR, inverse click propensity on clicked rows); scenario id as a feature",
            build=lazy("mssbench_escm2.model:ESCM2"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            task_weights=escm2_task_weights,
            paper="Wang et al., ESCM²: Entire Space Counterfactual Multi-Task Model for "
            "Post-Click Conversion Rate Estimation, SIGIR 2022, "
            "https://doi.org/10.1145/3477495.3531972",
            check_params={"embed_dim": 4, "n_experts": 3, "expert_hidden": [16]},
            # The counterfactual CVR risk is defined on a click -> conversion chain only: the
            # model refuses (one line, at build) a schema without one.
            expected_failed_checks={
                f"{check}[{variant}]": "needs a conversion task that implies a click task"
                for check in (
                    "check_output_shape_and_dtype",
                    "check_finite_outputs_and_loss",
                    "check_every_parameter_gets_gradient",
                    "check_single_scenario_batch",
                )
                for variant in ("no_relations", "one_task")
            },
            tags={
                "head": "esmm",
                "heads": ["esmm"],
                "scenario_handling": "scenario as input feature",
            },
        )
    ]
