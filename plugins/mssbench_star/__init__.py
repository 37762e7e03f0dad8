"""STAR model plugin."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, OPTIONAL_WIDTHS, POSITIVE, PROBABILITY, WIDTHS

DEFAULTS = {
    "embed_dim": 16,
    "hidden": [256, 128, 64],
    "dropout": 0.0,
    "auxiliary": True,
    "aux_hidden": [64],
    "pn_momentum": 0.1,
    "pn_eps": 1e-5,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "hidden": WIDTHS,
    "dropout": DROPOUT,
    "aux_hidden": OPTIONAL_WIDTHS,
    "pn_momentum": PROBABILITY,
    "pn_eps": POSITIVE,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "hidden": Widths(layers=(2, 3), widths=(64, 128, 256)),
    "dropout": FloatRange(0.0, 0.5),
}


@hookimpl
def mssbench_register_models():
    """Register ``star``."""
    return [
        ModelSpec(
            name="star",
            summary="STAR: partitioned norm, one star-topology FCN per task, auxiliary network; "
            "scenario-pure batches (--batching mixed: 'STAR (mixed batches)')",
            build=lazy("mssbench_star.model:STAR"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Sheng et al., One Model to Serve All: Star Topology Adaptive Recommender for "
            "Multi-Domain CTR Prediction, CIKM 2021, https://arxiv.org/abs/2101.11427",
            check_params={"embed_dim": 4, "hidden": [16, 8], "aux_hidden": [8]},
            tags={
                "batching": "scenario_pure",
                "scenario_handling": "partitioned normalisation with per-scenario statistics, "
                "star FCN (shared weights * per-scenario weights), auxiliary network on the "
                "scenario embedding",
            },
        )
    ]
