"""Tests of the MovieLens plugin (plugins/mssbench_movielens): layouts, protocols, bad input.

The GroupLens licence forbids redistribution, so no MovieLens row is bundled: the tests write
small files in the GroupLens formats (random users, movies and ratings) into ``tmp_path``. The
complete ML-100K in ``../shared/data-samples`` is used when present (``realdata`` tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dataset_checks import check_conformance, check_loaded, cli_run, fit_every_model
from mssbench_movielens import loader

from mssbench.errors import ConfigError, DataError
from mssbench.plugins import load_registry

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data-samples" / "movielens"
GENRES = loader.GENRES[1:]


def make_rows(seed=0, n_users=40, n_movies=30, n=600):
    rng = np.random.default_rng(seed)
    users = [
        (u, "FM"[rng.integers(2)], int(rng.choice(loader.AGE_CODES)), int(rng.integers(21)),
         f"{rng.integers(100000):05d}")
        for u in range(1, n_users + 1)
    ]  # fmt: skip
    movies = [
        (m, f"Movie {m}, The (19{m % 100:02d})",
         "|".join(rng.choice(GENRES, size=rng.integers(1, 4), replace=False)))
        for m in range(1, n_movies + 1)
    ]  # fmt: skip
    ratings = sorted(
        (int(rng.integers(1, n_users + 1)), int(rng.integers(1, n_movies + 1)),
         int(rng.integers(1, 6)), 978300000 + i)
        for i in range(n)
    )  # fmt: skip
    return users, movies, ratings


def write_1m(folder: Path, rows, merged=False):
    users, movies, ratings = rows
    folder.mkdir(parents=True, exist_ok=True)
    if merged:
        u, m = {r[0]: r for r in users}, {r[0]: r for r in movies}
        lines = ["user_id,movie_id,rating,timestamp,title,genres,gender,age,occupation,zip"]
        for uid, mid, r, t in ratings:
            _, g, a, o, z = u[uid]
            lines.append(f'{uid},{mid},{r},{t},"{m[mid][1]}",{m[mid][2]},{g},{a},{o},{z}')
        (folder / "ml-1m.csv").write_text("\n".join(lines) + "\n")
        return folder
    (folder / "users.dat").write_text("".join("::".join(map(str, r)) + "\n" for r in users))
    (folder / "movies.dat").write_bytes(
        "".join("::".join(map(str, r)) + "\n" for r in movies).encode("latin-1")
    )
    (folder / "ratings.dat").write_text("".join("::".join(map(str, r)) + "\n" for r in ratings))
    return folder


def write_100k(folder: Path, rows):
    users, movies, ratings = rows
    folder.mkdir(parents=True, exist_ok=True)
    years = {1: 15, 18: 20, 25: 30, 35: 40, 45: 47, 50: 52, 56: 60}
    (folder / "u.user").write_text(
        "".join(f"{u}|{years[a]}|{g}|job{o}|{z}\n" for u, g, a, o, z in users)
    )
    item = []
    for m, title, genres in movies:
        flags = ["1" if g in genres.split("|") else "0" for g in loader.GENRES]
        item.append("|".join([str(m), title.replace(",", ""), "01-Jan-1995", "", "url", *flags]))
    (folder / "u.item").write_text("\n".join(item) + "\n")
    (folder / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in ratings))
    return folder


def prepare_load(tmp_path, dataset, source, protocol="m3oe"):
    cache = tmp_path / "cache" / dataset
    rows = loader.prepare(dataset, source, cache, log=lambda m: None)
    return rows, loader.load(dataset, {"protocol": protocol, "data_dir": str(cache)})


@pytest.fixture(scope="module")
def rows():
    return make_rows()


def test_registered_with_both_protocols():
    registry = load_registry()
    for name in ("movielens-1m", "movielens-100k"):
        spec = registry.dataset(name)
        assert spec.prepare is not None and spec.options["protocol"] == "m3oe"
        assert registry.plugin_of("dataset", name) == "movielens"


def test_m3oe_protocol_follows_the_definition(tmp_path, rows):
    summary, data = prepare_load(tmp_path, "movielens-1m", write_1m(tmp_path / "src", rows))
    check_loaded(data)
    users, _, ratings = rows
    assert summary[0]["rows"] == len(ratings) and summary[0]["layout"] == "grouplens"
    assert data.protocol.id == "movielens-1m/m3oe/v1/age_under25+age_25_34+age_35plus"
    n = len(ratings)
    a, b = int(n * 0.8), int(n * 0.9)
    age = {u: r[2] for u, r in enumerate(users, 1)}
    group = {1: 0, 18: 0, 25: 1, 35: 2, 45: 2, 50: 2, 56: 2}
    for name, part in (("train", ratings[:a]), ("valid", ratings[a:b]), ("test", ratings[b:])):
        split = getattr(data, name)
        rating = np.array([r[2] for r in part])
        assert split.labels[:, 0].tolist() == (rating > 3).astype(float).tolist()
        assert split.labels[:, 1].tolist() == (rating > 4).astype(float).tolist()
        assert split.scenario.tolist() == [group[age[r[0]]] for r in part]
    assert data.schema.task_names == ("click", "like")
    assert [f.name for f in data.schema.categorical][:2] == ["user_id", "movie_id"]


def test_mmlrec_protocol_follows_the_definition(tmp_path, rows):
    _, data = prepare_load(tmp_path, "movielens-1m", write_1m(tmp_path / "src", rows), "mmlrec")
    check_loaded(data)
    assert data.protocol.id == "movielens-1m/mmlrec/v1/F+M"
    assert data.schema.task_names == ("ctr", "ctcvr") and data.schema.n_numeric == 0
    users = {u: r[1] for u, r in enumerate(rows[0], 1)}
    total = sum(len(getattr(data, s)) for s in ("train", "valid", "test"))
    assert total == len(rows[2])
    # Rating > 2 and > 3 by rating counts; gender F = 0, M = 1 by user counts.
    ratings = np.array([r[2] for r in rows[2]])
    got = sum(getattr(data, s).labels.sum(0) for s in ("train", "valid", "test"))
    assert got.tolist() == [float((ratings > 2).sum()), float((ratings > 3).sum())]
    males = sum(int(getattr(data, s).scenario.sum()) for s in ("train", "valid", "test"))
    assert males == sum(users[r[0]] == "M" for r in rows[2])


def test_merged_csv_layout_gives_the_same_data(tmp_path, rows):
    _, a = prepare_load(tmp_path / "a", "movielens-1m", write_1m(tmp_path / "g", rows))
    summary, b = prepare_load(
        tmp_path / "b", "movielens-1m", write_1m(tmp_path / "m", rows, merged=True)
    )
    assert summary[0]["layout"] == "merged-csv"
    for s in ("train", "valid", "test"):
        x, y = getattr(a, s), getattr(b, s)
        for field in ("categorical", "numeric", "scenario", "labels"):
            assert torch.equal(getattr(x, field), getattr(y, field)), (s, field)


def test_100k_under_the_same_code(tmp_path, rows):
    _, a = prepare_load(tmp_path / "a", "movielens-1m", write_1m(tmp_path / "g", rows))
    _, b = prepare_load(tmp_path / "b", "movielens-100k", write_100k(tmp_path / "k", rows))
    assert b.protocol.id.startswith("movielens-100k/m3oe/v1/")
    for s in ("train", "valid", "test"):  # ages in years map onto the ML-1M age groups
        assert torch.equal(getattr(a, s).scenario, getattr(b, s).scenario)
        assert torch.equal(getattr(a, s).labels, getattr(b, s).labels)
        assert torch.equal(getattr(a, s).numeric, getattr(b, s).numeric)


def test_every_model_runs_on_movielens(tmp_path, rows):
    _, data = prepare_load(tmp_path, "movielens-1m", write_1m(tmp_path / "src", rows))
    assert "mmoe" in fit_every_model(data)


@pytest.mark.parametrize("protocol", ["m3oe", "mmlrec"])
def test_conformance_with_the_oov_probe(tmp_path, rows, protocol):
    for dataset, write in (("movielens-1m", write_1m), ("movielens-100k", write_100k)):
        cache = tmp_path / dataset
        loader.prepare(dataset, write(tmp_path / f"src-{dataset}", rows), cache, log=lambda m: None)
        check_conformance(dataset, {"data_dir": str(cache), "protocol": protocol})


def test_cli_prepare_and_run(tmp_path, rows, monkeypatch):
    monkeypatch.setenv("MSSBENCH_DATA_DIR", str(tmp_path / "cache"))
    loader.prepare("movielens-100k", write_100k(tmp_path / "k", rows), tmp_path / "cache" /
                   "movielens-100k", log=lambda m: None)  # fmt: skip
    record = cli_run(tmp_path, "movielens-100k", "-D", "protocol=mmlrec")
    assert record["protocol"]["id"] == "movielens-100k/mmlrec/v1/F+M"


BAD_INPUT = [
    ("ratings.dat", lambda t: t + "7::3::4\n",
     r"ratings.dat: line 601: expected 4 columns, got 3 \(truncated"),
    ("ratings.dat", lambda t: t[: t.rindex("::")],
     r"ratings.dat: line 600: expected 4 columns, got 3"),
    ("ratings.dat", lambda t: "1::2::9::5\n" + t,
     r"ratings.dat: line 1, column 'rating': expected a value in \[1, 5\], got 9"),
    ("ratings.dat", lambda t: "999::2::4::5\n" + t,
     r"ratings.dat: line 1, column 'user_id': expected a user_id of users.dat, got 999"),
    ("ratings.dat", lambda t: "1::x::4::5\n" + t,
     r"ratings.dat: line 1, column 'movie_id': expected an integer, got 'x'"),
    ("users.dat", lambda t: "41::W::1::1::00000\n" + t,
     r"users.dat: line 1, column 'gender': expected one of F, M, got 'W'"),
    ("users.dat", lambda t: t + "1::F::1::1::00000\n",
     r"users.dat: line 41, column 'user_id': expected a user_id not seen before, got 1"),
    ("movies.dat", lambda t: "1::A::Horror|Jazz\n" + t,
     r"movies.dat: line 1, column 'genres': unknown genre 'Jazz'"),
]  # fmt: skip


@pytest.mark.parametrize("file, edit, message", BAD_INPUT)  # fmt: skip
def test_bad_input_is_one_line(tmp_path, rows, file, edit, message):
    src = write_1m(tmp_path / "src", rows)
    (src / file).write_text(edit((src / file).read_text(encoding="latin-1")), encoding="latin-1")
    with pytest.raises(DataError, match=message) as err:
        loader.prepare("movielens-1m", src, tmp_path / "cache", log=lambda m: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists()


def test_missing_files_and_columns(tmp_path, rows):
    src = write_1m(tmp_path / "src", rows)
    (src / "users.dat").unlink()
    with pytest.raises(DataError, match=r"lacks users.dat: download ml-1m.zip from"):
        loader.prepare("movielens-1m", src, tmp_path / "c", log=print)
    with pytest.raises(DataError, match=r"no MovieLens files in .*mssbench data prepare"):
        loader.prepare("movielens-100k", tmp_path / "src", tmp_path / "c", log=print)
    merged = write_1m(tmp_path / "m", rows, merged=True) / "ml-1m.csv"
    merged.write_text(merged.read_text().replace(",zip\n", ",zipcode\n", 1))
    with pytest.raises(DataError, match=r"ml-1m.csv: line 1: missing column\(s\) zip"):
        loader.prepare("movielens-1m", merged.parent, tmp_path / "c", log=print)


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match=r"no prepared data in .*download ml-100k.zip"):
        loader.load("movielens-100k", {"protocol": "m3oe", "data_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"unknown protocol 'star'; valid protocols: m3oe"):
        loader.load("movielens-1m", {"protocol": "star", "data_dir": str(tmp_path)})


@pytest.mark.realdata
@pytest.mark.skipif(
    not (SHARED / "ml-100k" / "u.data").is_file(),
    reason="needs the complete ML-100K in ../shared/data-samples (GroupLens licence: not bundled)",
)
def test_real_ml100k_counts(tmp_path):
    summary, data = prepare_load(tmp_path, "movielens-100k", SHARED / "ml-100k")
    assert summary[0]["rows"] == 100_000 and summary[0]["users"] == 943
    assert summary[0]["movies"] == 1682
    check_loaded(data)
    assert data.info["rows"] == {"train": 80_000, "valid": 10_000, "test": 10_000}
