"""Tests of the synthetic AliExpress twin (plugins/mssbench_aliexpress_synth).

Everything is generated, so these run from a fresh clone; sizes are small (a few 10k rows) so
the whole module takes seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import mssbench_aliexpress_synth
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from mssbench_aliexpress.schema import (
    CODE_COUNTS,
    COUNTRIES,
    SPLIT_SALT,
    VALID_FRACTION,
    make_protocol,
    make_schema,
)
from mssbench_aliexpress_synth import generator as G
from mssbench_aliexpress_synth import loader as L

from mssbench.cli import main
from mssbench.data.splits import holdout_mask
from mssbench.errors import ConfigError, DataError
from mssbench.metrics import grouped_auc
from mssbench.plugins import load_registry

N = 60_000


@pytest.fixture(scope="module")
def gen() -> G.Generated:
    return G.generate(G.SynthConfig(n_rows=N, seed=0))


@pytest.fixture(scope="module")
def big() -> G.Generated:
    """Large enough for rate and AUC checks."""
    return G.generate(G.SynthConfig(n_rows=200_000, seed=0))


def concat(g: G.Generated, name: str, splits=G.SPLITS) -> np.ndarray:
    return np.concatenate([g.arrays[s][name] for s in splits])


def auc(scores, labels) -> float:
    s = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels))
    return float(grouped_auc(s, y, torch.zeros(len(s), dtype=torch.long), 1)[0])


# --------------------------------------------------------------------------- registration


def test_hook_registers_synthetic_dataset():
    specs = mssbench_aliexpress_synth.mssbench_register_datasets()
    assert [s.name for s in specs] == ["aliexpress-synth"]
    spec = specs[0]
    spec.validate()
    assert "SYNTHETIC" in spec.summary
    assert spec.tags == {"synthetic": True, "group": "search_id"}
    assert {"n_rows", "seed", "scenarios", "cache", "cvr_scale"} <= set(spec.options)
    assert spec.options["scenarios"] == "NL,ES,FR,US,RU"
    assert "aliexpress-synth" in load_registry().datasets


def test_schema_and_protocol_are_the_shared_ones():
    data = L.load({"n_rows": 20_000})
    assert data.schema == make_schema(COUNTRIES)
    assert data.protocol == make_protocol(
        "aliexpress-synth",
        COUNTRIES,
        synthetic=True,
        variant="g2-n20000-seed0-cvr4-small1-train0.1-dev0.1-conflict1-task0.7",
    )
    assert data.protocol.id.startswith(
        "synthetic/aliexpress-synth/standard-g2-n20000-seed0-cvr4-small1-train0.1-dev0.1-conflict1-task0.7/"
    )
    # Different generated data never shares a protocol id.
    other = L.load({"n_rows": 20_000, "seed": 1})
    assert other.protocol.id != data.protocol.id
    assert not data.memory_mapped
    assert data.test.oracle is not None and data.test.oracle.dtype == torch.float32
    assert data.info["synthetic"] is True
    assert set(data.info["oracle_auc"]) == {"train", "valid", "test"}


# --------------------------------------------------------------------------- values


def test_dtypes_and_value_ranges(gen):
    vocab = np.array(make_schema(COUNTRIES).vocab_sizes)
    for split in G.SPLITS:
        a = gen.arrays[split]
        assert a["categorical"].dtype == np.int8 and a["numeric"].dtype == np.float32
        assert a["labels"].dtype == np.float32 and a["oracle"].dtype == np.float32
        cat = a["categorical"].astype(np.int64)
        assert (cat >= 1).all(), "id 0 (out of vocabulary) is never produced"
        assert (cat < vocab).all() and (cat.max(0) == np.array(CODE_COUNTS)).all()
        num = a["numeric"]
        assert np.isfinite(num).all() and num.min() >= 0 and num.max() <= 1
        assert set(np.unique(a["labels"])) <= {0.0, 1.0}
        assert np.isfinite(a["oracle"]).all()
    num = concat(gen, "numeric")
    assert 0.1 < (num == 0).mean() < 0.6, "many numerics are exactly 0, as in the real data"


def test_purchase_implies_click_and_oracle_is_consistent(gen):
    labels, oracle = concat(gen, "labels"), concat(gen, "oracle").astype(np.float64)
    assert (labels[:, 1] <= labels[:, 0]).all()
    assert labels[:, 1].sum() > 0
    assert (oracle[:, 1] <= oracle[:, 0] + 1e-5).all(), "P(ctcvr) <= P(ctr)"


def test_ctcvr_logit_in_log_space():
    a, b = np.array([-30.0, -2.0, 0.0, 3.0, 40.0]), np.array([-5.0, 1.0, 0.0, 40.0, 40.0])
    got = G.ctcvr_logit(a, b)
    p = 1 / (1 + np.exp(-a)) / (1 + np.exp(-b))
    with np.errstate(divide="ignore"):
        want = np.log(p) - np.log1p(-p)
    assert np.isfinite(got).all()
    assert np.allclose(got[:3], want[:3], rtol=1e-9)
    assert got[4] > 35  # p = 1 - 2e-18: a naive 1 - p underflows


def test_deterministic_by_seed(gen):
    again = G.generate(G.SynthConfig(n_rows=N, seed=0))
    other = G.generate(G.SynthConfig(n_rows=N, seed=1))
    for split in G.SPLITS:
        for name in G.ARRAYS:
            assert np.array_equal(gen.arrays[split][name], again.arrays[split][name])
    assert not np.array_equal(gen.arrays["test"]["numeric"], other.arrays["test"]["numeric"])
    assert not np.array_equal(gen.arrays["test"]["labels"], other.arrays["test"]["labels"])


def test_output_does_not_depend_on_the_chunk_size(gen):
    for chunk_rows in (G.BLOCK_ROWS, 3 * G.BLOCK_ROWS + 5, 1 << 22):
        other = G.generate(G.SynthConfig(n_rows=N, seed=0), chunk_rows=chunk_rows)
        for split in G.SPLITS:
            for name in G.ARRAYS:
                assert np.array_equal(gen.arrays[split][name], other.arrays[split][name]), (
                    chunk_rows,
                    split,
                    name,
                )


def test_country_subset_is_exactly_those_rows(gen):
    sub = G.generate(G.SynthConfig(n_rows=N, seed=0, countries=("FR", "NL")))
    assert sub.config.countries == ("NL", "FR")
    for split in G.SPLITS:
        full, part = gen.arrays[split], sub.arrays[split]
        keep = np.isin(full["scenario"], [COUNTRIES.index("NL"), COUNTRIES.index("FR")])
        for name in G.ARRAYS:
            if name == "scenario":  # ids index the selected countries
                assert np.array_equal(
                    part[name], np.where(full[name][keep] == 0, 0, 1).astype(np.int8)
                )
                continue
            # Both are ordered by (position in stream, stream): the same relative order.
            assert np.array_equal(part[name], full[name][keep]), (split, name)


# --------------------------------------------------------------------------- sizes and rates


def test_country_proportions(gen):
    """Test parts in the Tianchi proportions (small ones times ``small_size``); train parts
    in the documented test ratios, the small countries' times ``small_train``."""
    config = G.SynthConfig()
    rows = G.stream_rows(N, config.small_size, config.small_train)
    assert sum(rows.values()) == N
    sizes = G.country_size(config.small_size)
    test_share = {c: sizes[c] * G.TEST_PER_TRAIN[c] / (1 + G.TEST_PER_TRAIN[c]) for c in COUNTRIES}
    for c in COUNTRIES:
        assert rows[(c, 1)] / rows[("ES", 1)] == pytest.approx(
            test_share[c] / test_share["ES"], rel=0.02
        )
        assert sizes[c] == G.COUNTRY_SIZE[c] * (config.small_size if c in G.SMALL_COUNTRIES else 1)
        scarce = config.small_train if c in G.SMALL_COUNTRIES else 1.0
        assert rows[(c, 1)] / rows[(c, 0)] == pytest.approx(G.TEST_PER_TRAIN[c] / scarce, rel=0.02)
        assert 0.3 <= G.TEST_PER_TRAIN[c] <= 0.5
    assert 7 < sizes["RU"] / sizes["NL"] * config.small_size < 8
    counts = gen.info["counts"]
    for c in COUNTRIES:
        official_train = counts["train"][c]["rows"] + counts["valid"][c]["rows"]
        assert official_train == rows[(c, 0)]
        assert counts["test"][c]["rows"] == rows[(c, 1)]
    scen = concat(gen, "scenario")
    per_country = [rows[(c, 0)] + rows[(c, 1)] for c in COUNTRIES]
    assert np.bincount(scen).tolist() == per_country


def test_rates_within_documented_ranges(big):
    counts = big.info["counts"]
    pooled = {k: sum(counts[s]["pooled"][k] for s in G.SPLITS) for k in ("rows", "clicks")}
    purchases = sum(counts[s]["pooled"]["purchases"] for s in G.SPLITS)
    assert 0.015 < pooled["clicks"] / pooled["rows"] < 0.03  # CTR 1.5-3%
    assert 0.001 < purchases / pooled["rows"] < 0.0035  # CTCVR 0.1-0.35% at cvr_scale 4
    assert counts["test"]["pooled"]["purchases"] >= 100
    for c in COUNTRIES:
        cell = counts["train"][c]
        target = G.CTR_TARGET[c]
        tol = 4 * math.sqrt(target / cell["rows"]) + 0.1 * target
        assert abs(cell["ctr"] - target) < tol, (c, cell["ctr"], target)
    # Purchase rates scale with cvr_scale (here 1: real-like).
    real = G.generate(G.SynthConfig(n_rows=100_000, seed=0, cvr_scale=1.0))
    rc = real.info["counts"]["train"]["pooled"]
    assert 0.01 < rc["cvr"] < 0.045 and rc["ctcvr"] < 0.001


def test_oracle_is_calibrated(big):
    """Labels are drawn from the oracle: predicted and observed rates agree per decile."""
    oracle = big.arrays["train"]["oracle"][:, 0].astype(np.float64)
    click = big.arrays["train"]["labels"][:, 0]
    p = 1 / (1 + np.exp(-oracle))
    edges = np.quantile(p, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    for d in range(10):
        m = which == d
        expected, n = p[m].mean(), m.sum()
        assert abs(click[m].mean() - expected) < 5 * math.sqrt(expected / n) + 1e-3


# --------------------------------------------------------------------------- pages and splits


def test_pages_and_validation_split(gen):
    sid = {s: gen.arrays[s]["search_id"] for s in G.SPLITS}
    sets = {s: set(np.unique(v).tolist()) for s, v in sid.items()}
    assert not sets["train"] & sets["valid"]
    assert not (sets["train"] | sets["valid"]) & sets["test"]
    # valid is exactly the shared page-hash rule applied to the official train pages.
    assert holdout_mask(sid["valid"], VALID_FRACTION, SPLIT_SALT).all()
    assert not holdout_mask(sid["train"], VALID_FRACTION, SPLIT_SALT).any()
    n_train_pages, n_valid_pages = len(sets["train"]), len(sets["valid"])
    frac = n_valid_pages / (n_train_pages + n_valid_pages)
    sd = math.sqrt(0.1 * 0.9 / (n_train_pages + n_valid_pages))
    assert abs(frac - VALID_FRACTION) < 4 * sd
    # Page-level (user/query) fields are shared by a page's items, like the real join.
    a = gen.arrays["train"]
    order = np.argsort(a["search_id"], kind="stable")
    ids = a["search_id"][order]
    same = ids[1:] == ids[:-1]
    user = np.concatenate([a["categorical"][:, :9].astype(np.float32), a["numeric"][:, :23]], 1)
    user = user[order]
    assert (user[1:][same] == user[:-1][same]).all()
    item = a["numeric"][order][:, 23:]
    assert (item[1:][same] != item[:-1][same]).any(axis=1).mean() > 0.99
    sizes = np.unique(ids, return_counts=True)[1]
    assert sizes.max() <= G.PAGE_MAX and 8 < sizes.mean() < 16


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 500))
def test_holdout_is_stable_under_row_order(gen_seed, n_pages):
    ids = G._Stream(3, 0, 0, 1, np.ones(1, np.int64), np.zeros(1, np.int64)).search_ids(
        0, np.random.default_rng(gen_seed).integers(1, 21, n_pages)
    )
    rows = np.repeat(ids, 3)
    perm = np.random.default_rng(gen_seed + 1).permutation(len(rows))
    mask = holdout_mask(rows, VALID_FRACTION, SPLIT_SALT)
    assert np.array_equal(holdout_mask(rows[perm], VALID_FRACTION, SPLIT_SALT), mask[perm])
    assert (mask.reshape(-1, 3) == mask.reshape(-1, 3)[:, :1]).all()  # a page is never split


@settings(max_examples=6, deadline=None)
@given(
    n_rows=st.integers(5_000, 40_000),
    blocks=st.integers(1, 12),
    countries=st.sets(st.sampled_from(COUNTRIES), min_size=1).map(tuple),
)
def test_chunking_never_changes_the_data(n_rows, blocks, countries):
    if "RU" not in countries:
        countries = (*countries, "RU")  # small countries alone can leave a split empty
    config = G.SynthConfig(n_rows=n_rows, seed=0, countries=countries)
    a = G.generate(config, chunk_rows=blocks * G.BLOCK_ROWS)
    b = G.generate(config, chunk_rows=1 << 22)
    for split in G.SPLITS:
        for name in G.ARRAYS:
            assert np.array_equal(a.arrays[split][name], b.arrays[split][name])
        ids = a.arrays[split]["search_id"]
        if split != "test":
            assert (holdout_mask(ids, VALID_FRACTION, SPLIT_SALT) == (split == "valid")).all()


# --------------------------------------------------------------------------- planted structure


def test_oracle_beats_every_single_feature(big):
    test = big.arrays["test"]
    sub = slice(0, 30_000)  # single-feature AUCs on a subset, to keep the test fast
    features = np.concatenate([test["numeric"][sub], test["categorical"][sub]], 1, dtype=np.float32)
    n, f = features.shape
    for t in (0, 1):
        y = test["labels"][:, t]
        oracle_auc = auc(test["oracle"][:, t], y)
        # All single-feature AUCs at once: one group per feature.
        single = grouped_auc(
            torch.from_numpy(features.T.reshape(-1).copy()),
            torch.from_numpy(np.tile(y[sub], f)),
            torch.arange(f).repeat_interleave(n),
            f,
        )[0].numpy()
        best = float(np.maximum(single, 1 - single).max())
        assert oracle_auc > 0.75 and oracle_auc > best + 0.1, (t, oracle_auc, best)
        # The binned AUC in info is the exact one to within about 1e-4.
        name = ("ctr", "ctcvr")[t]
        assert big.info["oracle_auc"]["test"]["pooled"][name] == pytest.approx(oracle_auc, abs=1e-3)


def _country_logits(big: G.Generated, config: G.SynthConfig | None = None):
    """Every country's true logits (and raw components) on the NL test rows."""
    config = config or G.SynthConfig()
    test = big.arrays["test"]
    scen, oracle = test["scenario"], test["oracle"].astype(np.float64)
    rows = scen == COUNTRIES.index("NL")
    cat = test["categorical"][rows]
    num = np.ascontiguousarray(test["numeric"][rows].T)
    world = G.world_of(config.seed, config.cvr_scale, config.sharing)
    logits = {c: world.logits(i, cat, num) for i, c in enumerate(COUNTRIES)}
    raw = {c: world._raw(i, cat, num).astype(np.float64) for i, c in enumerate(COUNTRIES)}
    return logits, raw, oracle[rows]


def test_country_effects_and_shared_task_signal(big):
    test = big.arrays["test"]
    scen, oracle = test["scenario"], test["oracle"].astype(np.float64)
    true_ctr = [float((1 / (1 + np.exp(-oracle[scen == i, 0]))).mean()) for i in range(5)]
    assert max(true_ctr) / min(true_ctr) > 1.3, "base rates differ by country"
    logits, raw, nl_oracle = _country_logits(big)
    assert np.allclose(logits["NL"][0], nl_oracle[:, 0], atol=1e-4)  # the oracle is exact
    conflict = G.CONFLICT_ORDER[: G.SynthConfig().conflict]
    for c in COUNTRIES[1:]:
        for t in (0, 1):
            diff = logits[c][t] - logits["NL"][t]
            assert diff.std() > 0.05, (c, t)  # each country has its own effects
            # The country components (Cc, Cp: raw rows 5, 6) share one effect, with the
            # opposite sign in the conflict countries.
            r = np.corrcoef(raw[c][5 + t], raw["NL"][5 + t])[0, 1]
            assert (r < -0.6) if c in conflict else (r > 0.6), (c, t, r)
    # Tasks share signal but are not the same task.
    r = np.corrcoef(logits["NL"][0], logits["NL"][1])[0, 1]
    assert 0.3 < r < 0.9


def test_task_share_ties_purchase_to_the_click_components(big):
    """The purchase logit loads on the click-only components as ``task_share`` says."""
    corr = {}
    for share in (0.0, 0.7):
        config = G.SynthConfig(n_rows=200_000, task_share=share)
        logits, raw, _ = _country_logits(big, config)
        corr[share] = np.corrcoef(logits["NL"][1], raw["NL"][3])[0, 1]  # purchase vs Hc
    # Not 0 at share 0: the numeric features are correlated through the user and item latents.
    assert abs(corr[0.0]) < 0.25 and corr[0.7] > corr[0.0] + 0.3, corr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("small_size", 0.25),
        ("small_train", 0.02),
        ("country_dev", 1.0),
        ("conflict", 2),
        ("task_share", 0.2),
    ],
)
def test_sharing_parameters_change_the_data_and_the_protocol(gen, name, value):
    assert getattr(G.SynthConfig(), name) != value
    other = G.generate(G.SynthConfig(n_rows=N, seed=0, **{name: value}))
    if name == "small_size":  # fewer rows of the small countries, the same rows of the others
        for c in COUNTRIES:
            before = gen.info["counts"]["test"][c]["rows"]
            after = other.info["counts"]["test"][c]["rows"]
            assert (after < before) if c in G.SMALL_COUNTRIES else (after > before), c
    elif name == "small_train":  # scarce training rows in the small countries, tests kept
        for c in COUNTRIES:
            train = [x.info["counts"]["train"][c]["rows"] for x in (gen, other)]
            test = [x.info["counts"]["test"][c]["rows"] for x in (gen, other)]
            assert test[1] >= test[0], c
            if c in G.SMALL_COUNTRIES:
                assert train[1] < 0.3 * train[0], c
            else:
                assert train[1] >= train[0], c
    else:  # the same features, other labels and oracle
        a, b = gen.arrays["test"], other.arrays["test"]
        assert np.array_equal(a["numeric"], b["numeric"])
        assert not np.allclose(a["oracle"], b["oracle"], atol=1e-3)
    ids = {L.to_dataset(g).protocol.id for g in (gen, other)}
    assert len(ids) == 2 and any(f"{value:g}" in i for i in ids), ids
    assert f"g{G.GENERATOR_VERSION}-" in L.to_dataset(gen).protocol.id
    assert L.cache_key(gen.config) != L.cache_key(other.config)


def test_small_train_cuts_train_parts_and_names_itself_in_the_id_below_one():
    """``small_train = 1`` keeps the protocol id of before the option; below 1 it cuts the
    small countries' train parts against their test parts and says so in the id."""
    config = G.SynthConfig(n_rows=N, seed=0, small_train=1.0)
    full = G.stream_rows(N, config.small_size)
    assert "-train" not in L.protocol_variant(config)
    scarce = G.stream_rows(N, config.small_size, 0.2)
    assert sum(scarce.values()) == N
    for c in G.SMALL_COUNTRIES:
        assert scarce[(c, 0)] / scarce[(c, 1)] == pytest.approx(
            0.2 * full[(c, 0)] / full[(c, 1)], rel=0.02
        )
    assert "-train0.2-" in L.protocol_variant(G.SynthConfig(n_rows=N, small_train=0.2))


def test_small_countries_are_small(gen):
    counts = gen.info["counts"]["train"]
    rows = {c: counts[c]["rows"] for c in COUNTRIES}
    for c in G.SMALL_COUNTRIES:
        assert rows[c] / counts["pooled"]["rows"] < 0.07, (c, rows)
    assert min(rows, key=rows.get) in G.SMALL_COUNTRIES


# --------------------------------------------------------------------------- options


def test_scenario_subset_via_load():
    data = L.load({"n_rows": 40_000, "scenarios": " es, nl "})
    assert data.schema.scenarios == ("NL", "ES")
    assert (
        data.protocol.id
        == "synthetic/aliexpress-synth/standard-g2-n40000-seed0-cvr4-small1-train0.1-dev0.1"
        "-conflict1-task0.7/v1/NL+ES"
    )
    for split in (data.train, data.valid, data.test):
        assert set(split.scenario.unique().tolist()) == {0, 1}


@pytest.mark.parametrize("value", ["NL,XX", "de", ""])
def test_unknown_country_is_a_data_error(value):
    with pytest.raises(DataError) as err:
        L.load({"n_rows": 20_000, "scenarios": value})
    msg = str(err.value)
    assert "NL, ES, FR, US, RU" in msg
    if value:
        assert value.split(",")[-1].upper() in msg


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"n_rows": 0}, "n_rows"),
        ({"n_rows": 300}, "too small"),
        ({"seed": -1}, "seed"),
        ({"cvr_scale": 0.0}, "cvr_scale"),
        ({"small_size": 0}, "small_size must be in \\(0, 1\\], got 0"),
        ({"small_size": 1.5}, "small_size must be in"),
        ({"small_train": 0}, "small_train must be in \\(0, 1\\], got 0"),
        ({"small_train": "few"}, "small_train must be a number, got 'few'"),
        ({"country_dev": -0.1}, "country_dev must be >= 0, got -0.1"),
        ({"conflict": 3}, "conflict must be an integer 0..2, got 3"),
        ({"conflict": "1.5"}, "conflict must be an integer, got '1.5'"),
        ({"task_share": 1}, "task_share must be in \\[0, 1\\), got 1"),
        ({"task_share": "lots"}, "task_share must be a number, got 'lots'"),
    ],
)
def test_bad_options_are_config_errors(options, words):
    with pytest.raises(ConfigError, match=words) as err:
        L.load({"n_rows": 20_000, **options})
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path, monkeypatch):
    options = {"n_rows": 30_000, "seed": 2, "cache": str(tmp_path)}
    first = L.load(options)
    assert first.memory_mapped and first.info["cache"]["hit"] is False
    (cache,) = [p for p in tmp_path.iterdir()]
    assert cache.name.startswith("aliexpress-synth-") and (cache / "manifest.json").is_file()

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not generate")

    monkeypatch.setattr(L, "generate", refuse)
    second = L.load(options)
    assert second.memory_mapped and second.info["cache"]["hit"] is True
    assert isinstance(np.load(cache / "train.numeric.npy", mmap_mode="r"), np.memmap)
    monkeypatch.undo()
    memory = L.load({**options, "cache": ""})
    for name in ("train", "valid", "test"):
        a, b, c = (getattr(d, name) for d in (first, second, memory))
        for field in ("categorical", "numeric", "scenario", "labels", "oracle"):
            assert torch.equal(getattr(a, field), getattr(b, field))
            assert torch.equal(getattr(b, field), getattr(c, field))
    assert second.info["oracle_auc"] == memory.info["oracle_auc"]
    # Other parameters, another cache; the first is left alone.
    L.load({**options, "seed": 3})
    assert len(list(tmp_path.iterdir())) == 2


def test_cache_auto_uses_the_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MSSBENCH_DATA_DIR", str(tmp_path))
    data = L.load({"n_rows": 20_000, "cache": "auto", "scenarios": "RU"})
    assert data.memory_mapped
    assert Path(data.info["cache"]["dir"]).parent == tmp_path / "aliexpress-synth"


def test_interrupted_cache_write_leaves_nothing_accepted(tmp_path, monkeypatch):
    options = {"n_rows": 30_000, "seed": 4, "cache": str(tmp_path)}
    real = G._scatter
    calls = {"n": 0}

    def crash(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated interruption mid-write")
        return real(*args, **kwargs)

    monkeypatch.setattr(G, "_scatter", crash)
    with pytest.raises(KeyboardInterrupt):
        L.load(options)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    # A temporary directory left by a killed process is ignored, not accepted.
    config = L.config_from_options(options)
    final = L.cache_dir(config, tmp_path)
    stale = tmp_path / f".{final.name}.tmp-killed"
    stale.mkdir()
    (stale / "train.numeric.npy").write_bytes(b"partial")
    data = L.load(options)
    assert data.info["cache"]["hit"] is False and final.is_dir()
    assert torch.equal(data.test.labels, L.load({**options, "cache": ""}).test.labels)


def test_corrupt_cache_is_a_data_error(tmp_path):
    options = {"n_rows": 20_000, "seed": 5, "cache": str(tmp_path)}
    L.load(options)
    final = L.cache_dir(L.config_from_options(options), tmp_path)
    path = final / "test.labels.npy"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="delete"):
        L.load(options)
    # A directory under the cache's name without a manifest is never taken for a cache.
    (final / "manifest.json").unlink()
    with pytest.raises(DataError, match="not a complete cache"):
        L.load(options)


# --------------------------------------------------------------------------- CLI


def test_cli_smoke_run(tmp_path):
    out = tmp_path / "runs"
    args = [
        "run",
        "-m",
        "shared_bottom",
        "-d",
        "aliexpress-synth",
        "-D",
        "n_rows=20000",
        "-p",
        "embed_dim=4",
        "-p",
        "bottom_hidden=16",
        "-p",
        "tower_hidden=8",
        "--epochs",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = result.output
    assert (
        "synthetic/aliexpress-synth/standard-g2-n20000-seed0-cvr4-small1-train0.1-dev0.1-conflict1-task0.7/v1/NL+ES+FR+US+RU"
        in text
    )
    for c in COUNTRIES:
        assert f"| {c} " in text
    assert "cvr" in text
    assert "Oracle" in text
    assert len(list(out.glob("*.json"))) == 1
