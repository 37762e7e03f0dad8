"""MovieLens-1M and MovieLens-100K: prepare the GroupLens files, load under a named protocol.

``prepare`` reads the files a user downloaded (ML-1M: ``ratings.dat``, ``users.dat``,
``movies.dat`` or the merged ``ml-1m.csv`` that M3oE and Scenario-Wise-Rec read; ML-100K:
``u.data``, ``u.user``, ``u.item``), joins users and movies to every rating and writes one
cached table in rating-file order. ``load`` applies a protocol (see README.md):

* ``m3oe``: scenario = age group ({1, 18}, {25}, {35, 45, 50, 56}); ``click`` = rating > 3,
  ``like`` = rating > 4; the first 80 % of the rows train, the next 10 % valid, the last 10 %
  test, in file order (M3oE's ``examples/run_movielens.py``);
* ``mmlrec``: scenario = gender (F, M); ``ctr`` = rating > 2, ``ctcvr`` = rating > 3 (MMLRec's
  ``label2``/``label3``); a stable hash of (user, movie) puts 80 % train, 10 % valid, 10 % test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mssbench.data import (
    CsvTable,
    TabularLayout,
    dataset_dir,
    file_facts,
    find_file,
    hash_split,
    ordered_split,
    read_cache,
    read_csv,
    split_columns,
    tabular_dataset,
    write_cache,
)
from mssbench.errors import ConfigError, DataError
from mssbench.spec import LoadedDataset, Protocol
from mssbench_movielens.protocols import GROUPLENS_URL, PROTOCOLS, SALT

CACHE_FORMAT = "mssbench-movielens"
CACHE_VERSION = 1
#: Genres in the order of ML-100K's u.genre (ML-1M uses the same names, without "unknown").
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
#: ML-1M age codes (users.dat); ML-100K ages in years are mapped to the code of their range.
AGE_CODES = (1, 18, 25, 35, 45, 50, 56)
GENDERS = ("F", "M")

#: dataset -> layout name -> the files it needs.
LAYOUTS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "movielens-1m": {
        "grouplens": ("ratings.dat", "users.dat", "movies.dat"),
        "merged-csv": ("ml-1m.csv",),
    },
    "movielens-100k": {"grouplens": ("u.data", "u.user", "u.item")},
}
_RATING = {"user_id": "int", "movie_id": "int", "rating": "int", "timestamp": "int"}
_MERGED = {**_RATING, "genres": "str", "gender": "str", "age": "int", "occupation": "int",
           "zip": "str"}  # fmt: skip

PROTOCOL_VERSION = 1


def protocol(dataset: str, name: str) -> Protocol:
    """The protocol ``name`` of ``dataset`` (``movielens-1m`` or ``movielens-100k``)."""
    p = PROTOCOLS[name]
    return Protocol(
        dataset=dataset,
        name=name,
        version=PROTOCOL_VERSION,
        scenarios=tuple(dict.fromkeys(p["scenarios"].values())),
        split_rule=p["split_rule"],
    )


# ------------------------------------------------------------------------------------------
# Reading the GroupLens files
# ------------------------------------------------------------------------------------------


def _codes(values: np.ndarray) -> np.ndarray:
    """Integer codes of strings: the index in their sorted set (the cache holds no text)."""
    return np.unique(values.astype(str), return_inverse=True)[1].astype(np.int64)


def _first_genre(table: CsvTable, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(first genre index in GENRES, bit set of all genres) of ``A|B|C`` strings."""
    texts, inverse = np.unique(table[column].astype(str), return_inverse=True)
    first = np.empty(len(texts), np.int64)
    bits = np.zeros(len(texts), np.int64)
    for k, text in enumerate(texts):
        names = text.split("|")
        unknown = [n for n in names if n not in GENRES]
        if unknown:
            i = int(np.flatnonzero(inverse == k)[0])
            raise DataError(
                f"{table.path}: line {table.line(i)}, column {column!r}: unknown genre "
                f"{unknown[0]!r} (known: {', '.join(GENRES)})"
            )
        idx = [GENRES.index(n) for n in names]
        first[k] = idx[0]
        bits[k] = sum(1 << g for g in set(idx))
    return first[inverse], bits[inverse]


def _age_code(years: np.ndarray) -> np.ndarray:
    """ML-1M age code of an age in years (<18 -> 1, 18-24 -> 18, ..., 56+ -> 56)."""
    return np.array(AGE_CODES, np.int64)[np.searchsorted(AGE_CODES[1:], years, side="right")]


def _join(ratings: CsvTable, key: str, table: CsvTable, what: str) -> np.ndarray:
    """Row of ``table`` for each rating (a DataError names a rating without one)."""
    ids = table[key]
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(np.diff(ids[order]) == 0)
    if dup.size:
        i = int(order[dup[0] + 1])
        table.check(key, np.arange(len(ids)) != i, f"a {key} not seen before")
    pos = np.clip(np.searchsorted(ids[order], ratings[key]), 0, len(ids) - 1)
    ratings.check(key, ids[order][pos] == ratings[key], f"a {key} of {what}")
    return order[pos]


def _read_1m_grouplens(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    ratings = read_csv(files["ratings.dat"], _RATING, header=False, delimiter="::")
    users = read_csv(
        files["users.dat"],
        {"user_id": "int", "gender": "str", "age": "int", "occupation": "int", "zip": "str"},
        header=False, delimiter="::", encoding="latin-1",
    )  # fmt: skip
    movies = read_csv(
        files["movies.dat"], {"movie_id": "int", "title": "str", "genres": "str"},
        header=False, delimiter="::", encoding="latin-1",
    )  # fmt: skip
    users.check_in("gender", GENDERS)
    users.check_in("age", AGE_CODES)
    users.check_range("occupation", 0, 20)
    first, bits = _first_genre(movies, "genres")
    u = _join(ratings, "user_id", users, "users.dat")
    m = _join(ratings, "movie_id", movies, "movies.dat")
    return _table(ratings, users, u, first[m], bits[m], users["age"][u])


def _read_1m_merged(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    t = read_csv(files["ml-1m.csv"], _MERGED, header=True, encoding="latin-1")
    t.check_in("gender", GENDERS)
    t.check_in("age", AGE_CODES)
    t.check_range("occupation", 0, 20)
    first, bits = _first_genre(t, "genres")
    return _table(t, t, np.arange(len(t)), first, bits, t["age"])


def _read_100k(files: Mapping[str, Path]) -> dict[str, np.ndarray]:
    ratings = read_csv(files["u.data"], _RATING, header=False, delimiter="\t")
    users = read_csv(
        files["u.user"],
        {"user_id": "int", "age": "int", "gender": "str", "occupation": "str", "zip": "str"},
        header=False, delimiter="|", encoding="latin-1",
    )  # fmt: skip
    flags = {g: "int" for g in GENRES}
    names = ["movie_id", "title", "release", "video", "url", *GENRES]
    movies = read_csv(
        files["u.item"], {"movie_id": "int", **flags},
        header=False, names=names, delimiter="|", encoding="latin-1",
    )  # fmt: skip
    users.check_in("gender", GENDERS)
    users.check_range("age", 1, 120)
    movies.check_binary(*GENRES)
    onehot = np.stack([movies[g] for g in GENRES], axis=1)
    has = onehot.any(axis=1)
    first = np.where(has, onehot.argmax(axis=1), 0)
    bits = (onehot << np.arange(len(GENRES))).sum(axis=1)
    u = _join(ratings, "user_id", users, "u.user")
    m = _join(ratings, "movie_id", movies, "u.item")
    users.columns["occupation"] = _codes(users["occupation"])
    return _table(ratings, users, u, first[m], bits[m], _age_code(users["age"][u]))


def _table(
    ratings: CsvTable, users: CsvTable, u: np.ndarray, genre: np.ndarray, genres: np.ndarray,
    age: np.ndarray,
) -> dict[str, np.ndarray]:  # fmt: skip
    ratings.check_range("rating", 1, 5)
    return {
        "user_id": ratings["user_id"],
        "movie_id": ratings["movie_id"],
        "rating": ratings["rating"],
        "timestamp": ratings["timestamp"],
        "gender": (users["gender"][u] == "M").astype(np.int64),
        "age": age.astype(np.int64),
        "occupation": users["occupation"][u].astype(np.int64),
        "zip": _codes(users["zip"])[u],
        "genre": genre.astype(np.int64),
        "genres": genres.astype(np.int64),
    }


_READERS = {
    ("movielens-1m", "grouplens"): _read_1m_grouplens,
    ("movielens-1m", "merged-csv"): _read_1m_merged,
    ("movielens-100k", "grouplens"): _read_100k,
}


def missing_message(dataset: str) -> str:
    """What to download and run when nothing is prepared."""
    layouts = " or ".join(" + ".join(files) for files in LAYOUTS[dataset].values())
    archive = "ml-1m.zip" if dataset == "movielens-1m" else "ml-100k.zip"
    return (
        f"download {archive} from {GROUPLENS_URL} (GroupLens licence: research use, no "
        f"redistribution), extract it into a directory DIR ({layouts}) and run: "
        f"mssbench data prepare {dataset} --source DIR"
    )


def _detect(dataset: str, source: Path) -> tuple[str, dict[str, Path]]:
    for layout, names in LAYOUTS[dataset].items():
        files = {n: find_file(source, [n]) for n in names}
        if all(files.values()):
            return layout, files  # type: ignore[return-value]
        if any(files.values()):
            lacking = ", ".join(n for n, p in files.items() if p is None)
            raise DataError(f"{dataset}: {source} lacks {lacking}: {missing_message(dataset)}")
    raise DataError(f"{dataset}: no MovieLens files in {source}: {missing_message(dataset)}")


def prepare(dataset: str, source: Path, dest: Path, log: Any = print) -> list[dict[str, Any]]:
    """Read the GroupLens files under ``source`` into the cache at ``dest``.

    Returns:
        The summary table: rows, users, movies and rating counts.

    Raises:
        DataError: No or incomplete files, bad values (named by file, line and column), a
            rating whose user or movie is not in the user or movie file.
    """
    layout, files = _detect(dataset, Path(source))
    log(f"{dataset}: reading the {layout} layout: {', '.join(str(p) for p in files.values())}")
    table = _READERS[dataset, layout](files)
    inputs = [{**file_facts(p), "path": str(p.resolve())} for p in files.values()]
    rows = len(table["rating"])
    counts = np.bincount(table["rating"], minlength=6)[1:].tolist()
    meta = {"dataset": dataset, "layout": layout, "inputs": inputs, "rows": rows,
            "ratings": dict(zip("12345", counts))}  # fmt: skip
    write_cache(dest, {"all": table}, meta, cache_format=CACHE_FORMAT, version=CACHE_VERSION)
    return [{
        "dataset": dataset, "layout": layout, "rows": rows,
        "users": int(np.unique(table["user_id"]).size),
        "movies": int(np.unique(table["movie_id"]).size),
        **{f"rating {k}": v for k, v in zip("12345", counts)},
    }]  # fmt: skip


def split_codes(name: str, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    """The split code (0 train, 1 valid, 2 test) of each cached rating under protocol ``name``."""
    if name == "m3oe":
        return ordered_split(len(cols["rating"]), 0.8, 0.9)
    return hash_split(cols["user_id"] * 1_000_003 + cols["movie_id"], 0.1, 0.1, SALT)


def load(dataset: str, options: Mapping[str, Any]) -> LoadedDataset:
    """Load the prepared ``dataset`` under ``options["protocol"]``.

    Raises:
        ConfigError: An unknown protocol.
        DataError: Nothing prepared (the message says what to download and run).
    """
    name = str(options.get("protocol", "m3oe") or "m3oe")
    if name not in PROTOCOLS:
        raise ConfigError(
            f"{dataset}: unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}"
        )
    p = PROTOCOLS[name]
    data_dir = dataset_dir(dataset, str(options.get("data_dir", "") or "") or None)
    manifest, arrays = read_cache(
        data_dir, cache_format=CACHE_FORMAT, version=CACHE_VERSION,
        missing=missing_message(dataset),
    )  # fmt: skip
    if manifest.get("dataset") != dataset:
        raise DataError(f"{dataset}: {data_dir} holds {manifest.get('dataset')}, not {dataset}")
    cols = {k: np.asarray(v) for k, v in arrays["all"].items()}
    low, high = p["thresholds"]
    cols[p["tasks"][0].label] = (cols["rating"] > low).astype(np.int8)
    cols[p["tasks"][1].label] = (cols["rating"] > high).astype(np.int8)
    codes = split_codes(name, cols)
    layout = TabularLayout(
        categorical=p["categorical"],
        numeric=p["numeric"],
        scenario=p["scenario"],
        scenarios=p["scenarios"],
        tasks=p["tasks"],
        relations=p["relations"],
        group="user_id",
    )
    info = {"cache": str(data_dir), "prepared": manifest["created"],
            "layout": manifest["layout"], "inputs": manifest["inputs"]}  # fmt: skip
    return tabular_dataset(split_columns(cols, codes), layout, protocol(dataset, name), info)
