"""Ranking, significance against the best, negative transfer, convergence and tracks."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from mssbench.base_rate import stalled
from mssbench.leaderboard.frame import Page
from mssbench.leaderboard.labels import record_tuned
from mssbench.leaderboard.tidy import per_seed
from mssbench.runners.trainer import converged
from mssbench.significance import ALPHA, holm, paired_p_value

#: Marks a model not significantly different from the best.
MARK = "†"


RANKING_RULE = "mean over the tasks {tasks} of the pooled test AUC, averaged over seeds"


TEST_RULE = (
    f"{MARK} = not significantly different from the best with n seeds (n = the seeds it shares "
    f"with the best model; this is not evidence that the two are equal): two-sided paired "
    f"t-test (`scipy.stats.ttest_rel`) of the per-seed ranking scores, pairs matched by seed, "
    f"Holm-corrected across the comparisons against the best on this page (family-wise "
    f"α = {ALPHA}); *p vs best* gives the Holm-adjusted p-value. It needs at least 2 seeds in "
    f"common with the best model, otherwise no test is made (p = n/a)"
)


def seed_scores(frame: pd.DataFrame, tasks: Sequence[str]) -> pd.DataFrame:
    """Per-seed ranking score of each variant: the mean over ``tasks`` of the pooled test AUC.

    Returns:
        Columns ``variant, seed, score``; ``score`` is NaN where a task's AUC is undefined.
    """
    cells = frame[
        (frame["scenario"] == "pooled") & (frame["metric"] == "auc") & frame["task"].isin(tasks)
    ]
    seeds = per_seed(cells)
    wide = seeds.pivot_table(
        index=["variant", "seed"], columns="task", values="value", aggfunc="first", dropna=False
    )
    wide = wide.reindex(columns=list(tasks))
    score = wide.mean(axis=1, skipna=False)
    return score.rename("score").reset_index().sort_values(["variant", "seed"], kind="mergesort")


def ranking(scores: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """Rank variants by mean score and test each against the best, paired by seed.

    Args:
        scores: Columns ``variant, seed, score`` (:func:`seed_scores`).
        alpha: Family-wise significance level of the comparisons against the best.

    Returns:
        One row per variant, best first: ``variant, mean, std, n_seeds, rank`` (competition
        ranking; NaN for a variant without a defined score), ``p_value`` (two-sided paired
        t-test against the best, NaN for the best itself and where fewer than 2 seeds are
        shared), ``p_holm`` (``p_value`` Holm-adjusted across this table's comparisons),
        ``n_common`` (seeds shared with the best) and ``not_different`` (True for the best and
        for every variant whose Holm-adjusted p-value is at least ``alpha``: not significantly
        different from the best with ``n_common`` seeds).
    """
    by_variant = {
        v: g.dropna(subset=["score"]).set_index("seed")["score"].sort_index()
        for v, g in scores.groupby("variant", sort=True)
    }
    table = pd.DataFrame(
        [
            {
                "variant": v,
                "mean": float(s.mean()) if len(s) else math.nan,
                "std": float(s.std(ddof=1)) if len(s) > 1 else math.nan,
                "n_seeds": len(s),
            }
            for v, s in by_variant.items()
        ],
        columns=["variant", "mean", "std", "n_seeds"],
    )
    table = table.sort_values(
        ["mean", "variant"], ascending=[False, True], na_position="last", kind="mergesort"
    ).reset_index(drop=True)
    table["rank"] = table["mean"].rank(method="min", ascending=False)
    table["p_value"] = math.nan
    table["p_holm"] = math.nan
    table["n_common"] = 0
    table["not_different"] = False
    if table.empty or math.isnan(table.loc[0, "mean"]):
        return table
    best = by_variant[table.loc[0, "variant"]]
    table.loc[0, "not_different"] = True
    table.loc[0, "n_common"] = len(best)
    for i in range(1, len(table)):
        other = by_variant[table.loc[i, "variant"]]
        common = best.index.intersection(other.index)
        table.loc[i, "n_common"] = len(common)
        if not math.isnan(table.loc[i, "mean"]) and len(common) >= 2:
            p = paired_p_value(best.loc[common].to_numpy(), other.loc[common].to_numpy())
            table.loc[i, "p_value"] = p
    table["p_holm"] = holm(table["p_value"].to_numpy())
    tested = table["p_holm"].notna()
    table.loc[tested, "not_different"] = table.loc[tested, "p_holm"] >= alpha
    return table


#: The model every other is compared with in the negative-transfer table.
TRANSFER_REFERENCE = "single_task"


TRANSFER_RULE = (
    "Each cell is the model's test AUC minus that of {reference} in the same scenario and "
    "task, averaged over the seeds both have (differences taken seed by seed); ▲ / ▼ = "
    "significantly higher / lower (two-sided paired t-test by seed, Holm-corrected across "
    "every cell of these tables, family-wise α = {alpha}); no mark: not significantly "
    "different with n seeds, or fewer than 2 seeds in common"
)


def transfer_reference(frame: pd.DataFrame, order: Sequence[str]) -> str | None:
    """The best-ranked variant of the single-task model on the page, or None if there is none."""
    single = set(frame.loc[frame["model"] == TRANSFER_REFERENCE, "variant"])
    return next((v for v in order if v in single), None)


def transfer_table(
    frame: pd.DataFrame, reference: str, cells: Sequence[tuple[str, str]], alpha: float = ALPHA
) -> pd.DataFrame:
    """Each variant's AUC minus the reference's, paired by seed, in every (scenario, task) cell.

    Returns:
        One row per (variant other than ``reference``, scenario, task) of ``cells``: ``diff``
        (mean over the common seeds of the per-seed difference), ``n_common``, ``p_value``
        (paired t-test; NaN with fewer than 2 common seeds), ``p_holm`` (Holm-adjusted over the
        whole table) and ``sign`` (+1 / -1 where ``p_holm < alpha``, else 0).
    """
    auc = per_seed(frame[frame["metric"] == "auc"])
    values = auc.set_index(["variant", "scenario", "task", "seed"])["value"].dropna()
    rows = []
    variants = [v for v in dict.fromkeys(frame["variant"]) if v != reference]
    for v, (scenario, task) in ((v, c) for v in sorted(variants) for c in cells):
        try:
            a = values.loc[(v, scenario, task)]
            b = values.loc[(reference, scenario, task)]
        except KeyError:
            a = b = pd.Series(dtype=float)
        common = a.index.intersection(b.index)
        x, y = a.loc[common].to_numpy(), b.loc[common].to_numpy()
        diff = x - y
        p = paired_p_value(x, y) if len(common) >= 2 else math.nan
        rows.append(
            {
                "variant": v,
                "scenario": scenario,
                "task": task,
                "diff": float(diff.mean()) if len(diff) else math.nan,
                "n_common": len(common),
                "p_value": p,
            }
        )
    cols = ["variant", "scenario", "task", "diff", "n_common", "p_value"]
    table = pd.DataFrame(rows, columns=cols)
    table["p_holm"] = holm(table["p_value"].to_numpy())
    significant = table["p_holm"] < alpha
    table["sign"] = np.where(significant, np.sign(table["diff"]), 0).astype(int)
    return table


def record_converged(rec: Mapping[str, Any]) -> bool | None:
    """Whether the run converged (:func:`mssbench.runners.trainer.converged`); None if unknown.

    Recomputed from the record's validation curve, best epoch and early stop, so records
    written before the flag (or under an earlier wording of the rule) are judged by the same
    rule; a record without a curve gives its own flag (``training.converged`` or top level).
    """
    training = rec.get("training") or {}
    history, best = training.get("history"), training.get("best_epoch")
    if history and best is not None and all("selection_score" in h for h in history):
        return converged(history, best, bool(training.get("stopped_early")))
    value = training.get("converged", rec.get("converged"))
    return None if value is None else bool(value)


def record_stalled(rec: Mapping[str, Any]) -> bool | None:
    """Whether the run's kept epoch predicts no better than the base rates (None: unknown).

    Recomputed from the record's validation curve and counts (:func:`mssbench.base_rate.stalled`),
    so records written before the ``stalled`` flag are judged by the same rule.
    """
    training = rec.get("training") or {}
    counts = (rec.get("dataset") or {}).get("counts") or {}
    return stalled(training.get("history") or [], training.get("best_epoch"), counts)


def page_track(records: Sequence[Mapping[str, Any]]) -> str:
    """The track of a page: tuned or default hyperparameters, converged, on CPU or GPU hardware.

    "converged" only where every record says its training converged (a record without the flag,
    or one run stopped by its budget, leaves the page in the fixed-budget track).
    """
    tuned = "tuned" if any(record_tuned(r) for r in records) else "default hyperparameters"
    flags = [record_converged(r) for r in records]
    if flags and all(flag is True for flag in flags):
        tuned += ", converged"
    devices = {
        str(((r.get("environment") or {}).get("hardware") or {}).get("device", "cpu"))
        for r in records
    }
    kind = "GPU" if any(d.startswith("cuda") for d in devices) else "CPU"
    return f"{tuned}, {kind}"


def learning_curves(page: Page) -> pd.DataFrame:
    """Per variant and epoch, the validation selection score: mean and std over runs.

    Columns ``variant, epoch, mean, std, n``; empty when no record carries a history.
    """
    rows = []
    for rec, label in zip(page.records, page.labels):
        for entry in (rec.get("training") or {}).get("history") or []:
            score = entry.get("selection_score") if isinstance(entry, dict) else None
            if score is not None and entry.get("epoch") is not None:
                rows.append({"variant": label, "epoch": int(entry["epoch"]), "score": score})
    frame = pd.DataFrame(rows, columns=["variant", "epoch", "score"])
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce").astype(float)
    agg = frame.groupby(["variant", "epoch"])["score"].agg(["mean", "std", "count"])
    return agg.rename(columns={"count": "n"}).reset_index()
