"""AdaSparse model plugin (``adasparse``)."""

from mssbench import Choice, FloatRange, ModelSpec, Widths, hookimpl
from mssbench.lazy import lazy
from mssbench.spec import DROPOUT, NON_NEGATIVE, POSITIVE, WIDTHS

#: form, epsilon, beta, alpha0 and delta_alpha are Scenario-Wise-Rec's AdaSparse defaults (the
#: paper's values are not known to us; beta = 2 bounds the factors as in the paper's scaling
#: form); widths are ours.
DEFAULTS = {
    "embed_dim": 16,
    "hidden": [256, 128, 64],
    "form": "fusion",
    "epsilon": 0.01,
    "beta": 2.0,
    "alpha0": 1.0,
    "delta_alpha": 1e-4,
    "dropout": 0.0,
}

#: Allowed values, checked before ``build`` (:class:`mssbench.Constraint`).
CONSTRAINTS = {
    "embed_dim": POSITIVE,
    "hidden": WIDTHS,
    "epsilon": NON_NEGATIVE,
    "beta": POSITIVE,
    "alpha0": POSITIVE,
    "delta_alpha": NON_NEGATIVE,
    "dropout": DROPOUT,
}


#: What ``mssbench tune`` searches besides the learning rate and weight decay.
SEARCH_SPACE = {
    "embed_dim": Choice((8, 16, 32)),
    "hidden": Widths(layers=(2, 3), widths=(128, 256)),
    "dropout": FloatRange(0.0, 0.5),
    "epsilon": FloatRange(1e-3, 1e-1, log=True),
}


@hookimpl
def mssbench_register_models():
    """Register ``adasparse``."""
    return [
        ModelSpec(
            name="adasparse",
            summary="AdaSparse (scaling/fusion weighting factors, no sparsity regulariser): "
            "scenario-aware pruners scale the embeddings and every hidden layer of each task's "
            "network",
            build=lazy("mssbench_adasparse.model:AdaSparse"),
            version=2,
            defaults=DEFAULTS,
            search_space=SEARCH_SPACE,
            constraints=CONSTRAINTS,
            paper="Yang et al., AdaSparse: Learning Adaptively Sparse Structures for "
            "Multi-Domain Click-Through Rate Prediction, CIKM 2022, "
            "https://arxiv.org/abs/2206.13108",
            check_params={"embed_dim": 4, "hidden": [16, 8]},
            tags={
                "scenario_handling": "scenario embedding as input and as the pruners' domain "
                "feature: per-sample neuron weighting factors, zero below epsilon"
            },
        )
    ]
