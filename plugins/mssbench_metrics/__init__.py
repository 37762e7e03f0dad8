"""Test metrics beyond AUC and log loss: average precision and normalized entropy."""

from mssbench import MetricSpec, hookimpl
from mssbench.lazy import lazy

# Imported when first called: registering the plugin imports no torch.
average_precision = lazy("mssbench_metrics.metrics:average_precision")
normalized_entropy = lazy("mssbench_metrics.metrics:normalized_entropy")


@hookimpl
def mssbench_register_metrics():
    """Register ``pr_auc`` and ``ne``."""
    return [
        MetricSpec(
            name="pr_auc",
            summary="Average precision: the area under the precision-recall curve, "
            "tie-aware (step-wise, no interpolation)",
            compute=average_precision,
            higher_is_better=True,
            reference="scikit-learn average_precision_score: AP = sum_n (R_n - R_{n-1}) P_n "
            "over the distinct scores in decreasing order",
        ),
        MetricSpec(
            name="ne",
            summary="Normalized entropy: log loss divided by the entropy of the cell's "
            "positive rate (1 = no better than predicting the base rate)",
            compute=normalized_entropy,
            higher_is_better=False,
            reference="He et al., 'Practical Lessons from Predicting Clicks on Ads at "
            "Facebook', ADKDD 2014, https://doi.org/10.1145/2648584.2648589",
        ),
    ]
