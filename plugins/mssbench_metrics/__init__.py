"""Test metrics beyond AUC and log loss: AP, NE, and the grouped GAUC and NDCG@10.

Grouped metrics rank within the search pages or users a dataset declares as its groups.
"""

from mssbench import MetricSpec, hookimpl
from mssbench.lazy import lazy

# Imported when first called: registering the plugin imports no torch.
average_precision = lazy("mssbench_metrics.metrics:average_precision")
normalized_entropy = lazy("mssbench_metrics.metrics:normalized_entropy")
gauc = lazy("mssbench_metrics.metrics:gauc")
ndcg_10 = lazy("mssbench_metrics.metrics:ndcg_10")


@hookimpl
def mssbench_register_metrics():
    """Register ``pr_auc``, ``ne``, ``gauc`` and ``ndcg_10``."""
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
        MetricSpec(
            name="gauc",
            summary="Group AUC: the per-group (search page, user) AUCs averaged with the groups' "
            "impressions as weights; groups holding one class are left out, counted in the "
            "cell's reason",
            compute=gauc,
            grouped=True,
            reference="Zhou et al., 'Deep Interest Network for Click-Through Rate Prediction', "
            "KDD 2018, https://doi.org/10.1145/3219819.3219823 (eq. 4)",
        ),
        MetricSpec(
            name="ndcg_10",
            summary="NDCG@10 within each group (search page, user), 0/1 gains, ties share their "
            "mean gain; unweighted mean over the groups holding a positive",
            compute=ndcg_10,
            grouped=True,
            reference="Jarvelin and Kekalainen, 'Cumulated gain-based evaluation of IR "
            "techniques', TOIS 2002, https://doi.org/10.1145/582415.582418",
        ),
    ]
