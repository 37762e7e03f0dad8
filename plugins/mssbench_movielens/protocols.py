"""MovieLens' two named protocols and its source, importable without the loader's dependencies."""

from __future__ import annotations

from typing import Any, Mapping

from mssbench.spec import Implies, Task

GROUPLENS_URL = "https://grouplens.org/datasets/movielens/"

SALT = 1_000_209
PROTOCOLS: Mapping[str, dict[str, Any]] = {
    "m3oe": {
        "scenarios": {
            1: "age_under25",
            18: "age_under25",
            25: "age_25_34",
            35: "age_35plus",
            45: "age_35plus",
            50: "age_35plus",
            56: "age_35plus",
        },
        "scenario": "age",
        "tasks": (Task("click", "click"), Task("like", "like")),
        "relations": (Implies(child="like", parent="click", conditional="like_given_click"),),
        "categorical": ("user_id", "movie_id", "gender", "occupation", "zip", "genre"),
        "numeric": ("age",),
        "thresholds": (3, 4),
        "split_rule": (
            "rows in rating-file order: first 80% train, next 10% valid, last 10% test "
            "(int(n*0.8), int(n*0.9)); click = rating > 3, like = rating > 4; vocabularies "
            "and the age scaler from train, unseen ids -> 0"
        ),
    },
    "mmlrec": {
        "scenarios": {0: "F", 1: "M"},
        "scenario": "gender",
        "tasks": (Task("ctr", "label2"), Task("ctcvr", "label3")),
        "relations": (Implies(child="ctcvr", parent="ctr", conditional="cvr"),),
        "categorical": ("user_id", "movie_id", "gender", "age", "occupation", "zip", "genres"),
        "numeric": (),
        "thresholds": (2, 3),
        "split_rule": (
            "valid/test = 10%/10% of the (user, movie) ratings by a stable hash "
            f"(mssbench.data.hash_split, salt {SALT}), the rest train; ctr = rating > 2, "
            "ctcvr = rating > 3; vocabularies from train, unseen ids -> 0"
        ),
    },
}
