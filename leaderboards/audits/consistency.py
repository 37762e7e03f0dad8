"""Are a page's records consistent with their repeats on other hardware? Model by model.

A bit-for-bit repeat needs the recorded CPU (`mssbench repeat`); on another CPU every number
moves a little. What can still be asked there: does a model's ranking score move
*systematically* between its records and their repeats, beyond what hardware noise does to
each seed? This script pairs each record with its repeat (same run hash), takes the page's
ranking score per seed (`mssbench.leaderboard.statistics.seed_scores`: the mean pooled test
AUC over TASKS) and tests the paired differences per model (`mssbench.significance`: two-sided
paired t-test, Holm-corrected over the models). A significant shift says the records were
not made by the code that made the repeats; no shift is consistency, not proof.

    mssbench repeat --tolerance 1 --out REPEATS leaderboards/runs/tuned/census-income
    python leaderboards/audits/consistency.py --records leaderboards/runs/tuned/census-income \
        --repeats REPEATS --tasks income,never_married
"""

from __future__ import annotations

import argparse

import pandas as pd

from mssbench.leaderboard.statistics import seed_scores
from mssbench.results import load_results
from mssbench.significance import ALPHA, holm, paired_p_value


def scores(directories: list[str], tasks: list[str]) -> pd.DataFrame:
    """Per-seed ranking score of each run in ``directories``, keyed by model and run hash."""
    frame = pd.concat([load_results(d) for d in directories], ignore_index=True)
    frame = frame[~frame["superseded"]].assign(variant=frame["model"] + "|" + frame["run_hash"])
    out = seed_scores(frame, tasks).dropna(subset=["score"])  # (the grid of variant x seed)
    out[["model", "run_hash"]] = out["variant"].str.split("|", expand=True)
    return out.drop(columns="variant")


def table(records: list[str], repeats: list[str], tasks: list[str]) -> pd.DataFrame:
    """One row per model: seeds paired, mean scores, mean difference, seed std, p, Holm p."""
    pairs = scores(records, tasks).merge(
        scores(repeats, tasks), on=["model", "run_hash", "seed"], suffixes=("_rec", "_rep")
    )
    rows = []
    for model, g in pairs.groupby("model", sort=True):
        rows.append(
            {
                "model": model,
                "seeds": len(g),
                "recorded": g["score_rec"].mean(),
                "repeated": g["score_rep"].mean(),
                "mean difference": (g["score_rep"] - g["score_rec"]).mean(),
                "recorded seed std": g["score_rec"].std(ddof=1),
                "p": paired_p_value(g["score_rep"], g["score_rec"]) if len(g) > 1 else float("nan"),
            }
        )
    out = pd.DataFrame(rows)
    out["Holm p"] = holm(out["p"].tolist())
    out["shifted"] = out["Holm p"] < ALPHA
    return out


def main() -> None:
    """Print the table as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records",
        action="append",
        required=True,
        help="a directory of the page's records (repeatable)",
    )
    parser.add_argument(
        "--repeats",
        action="append",
        required=True,
        help="a directory of their repeats, `mssbench repeat --out` (repeatable)",
    )
    parser.add_argument("--tasks", required=True, help="the page's ranking tasks, comma-separated")
    args = parser.parse_args()
    out = table(args.records, args.repeats, args.tasks.split(","))
    print(out.to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()
