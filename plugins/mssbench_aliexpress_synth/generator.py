"""A seeded generator of AliExpress-shaped impressions with planted MS-MT structure.

Every row has exactly the processed AliExpress layout (``plugins/mssbench_aliexpress/schema.py``):
16 categorical fields stored as ids ``1..K`` (``K`` the published code count; id 0, out of
vocabulary, is never produced), 63 numeric fields in ``[0, 1]`` (the first 23 are page-level user
features, the other 40 item features), labels click and purchase (purchase implies click) and
the search id of the row's page. The rows of a page share its user fields, as after the real
user/item join.

Determinism. All randomness comes from NumPy ``PCG64`` streams keyed by ``SeedSequence(seed,
spawn_key=...)``:

* ``(0,)``: the planted model (the "world": weights, category distributions, drift);
* ``(3,)``: the shared country effects and the country loadings of the planted model;
* ``(2, country, block, k)``: the calibration sample of the world (see :class:`World`);
* ``(1, stream, block, k)``: generation block ``block`` of stream ``stream`` (one country's
  official train or test part), ``k = 0`` for the page structure and ``k = 1`` for the content.

A block is :data:`BLOCK_ROWS` consecutive rows of a stream and is the unit of randomness; pages
never cross a block. Work is done in chunks of whole blocks of one stream, so the output does not
depend on the chunk size, and the first blocks of a stream do not depend on ``n_rows``. The
rows of a country do not depend on which other countries are generated.

Memory. Generation runs in two passes: a cheap one over the page structure (to know how many
rows each split gets), then one over the content that writes each chunk into preallocated
output arrays (NumPy arrays or memory-mapped ``.npy`` files), so the peak memory is the output
plus one chunk.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from mssbench_aliexpress.schema import (
    CATEGORICAL,
    CODE_COUNTS,
    COUNTRIES,
    NUMERIC,
    SPLIT_SALT,
    VALID_FRACTION,
    check_countries,
)

from mssbench.data.splits import holdout_mask
from mssbench_aliexpress_synth.options import SHARING_DEFAULTS

__all__ = [
    "ARRAYS",
    "BLOCK_ROWS",
    "COUNTRY_SIZE",
    "CONFLICT_ORDER",
    "CTR_TARGET",
    "CVR_TARGET",
    "GENERATOR_VERSION",
    "SHARING_DEFAULTS",
    "SMALL_COUNTRIES",
    "SPLITS",
    "TEST_PER_TRAIN",
    "Generated",
    "SynthConfig",
    "Sharing",
    "World",
    "binned_auc",
    "country_size",
    "ctcvr_logit",
    "generate",
    "stream_rows",
    "world_of",
]

#: Bumped whenever the same parameters would give different data (part of the cache key and
#: of the protocol id).
GENERATOR_VERSION = 2
#: Rows per generation block, the unit of randomness (part of the generator's definition).
BLOCK_ROWS = 4096
SPLITS = ("train", "valid", "test")
#: Arrays of each split: name -> (trailing shape, dtype).
ARRAYS: Mapping[str, tuple[tuple[int, ...], Any]] = {
    "categorical": ((len(CATEGORICAL),), np.int8),
    "numeric": ((len(NUMERIC),), np.float32),
    "scenario": ((), np.int8),
    "labels": ((2,), np.float32),
    "oracle": ((2,), np.float32),
    "search_id": ((), np.int64),
}

#: Relative size (all rows, train + test) of each country: the ratio of the Tianchi zip sizes
#: (NL 1.49 GB, ES 2.60, FR 2.25, US 2.25, RU 11.34; Tianchi dataset 74690).
COUNTRY_SIZE: Mapping[str, float] = {"NL": 1.0, "ES": 1.745, "FR": 1.51, "US": 1.51, "RU": 7.61}
#: Official test rows per train row: NL from its published counts (5,559,302 / 12,157,895);
#: ES and US from the commonly quoted (unverified) figures; FR and RU chosen in between.
TEST_PER_TRAIN: Mapping[str, float] = {"NL": 0.457, "ES": 0.41, "FR": 0.45, "US": 0.375, "RU": 0.42}
#: Target click rate per impression of each country's train part (a design choice in the range
#: of the real data, 1.5-3%; the planted country base rates).
CTR_TARGET: Mapping[str, float] = {"NL": 0.022, "ES": 0.027, "FR": 0.020, "US": 0.017, "RU": 0.026}
#: Target purchase rate per click at ``cvr_scale = 1`` (real-like: 2-3.5%, i.e. CTCVR of about
#: 0.03-0.08% of impressions). The default ``cvr_scale`` multiplies these by 4.
CVR_TARGET: Mapping[str, float] = {"NL": 0.035, "ES": 0.024, "FR": 0.028, "US": 0.025, "RU": 0.020}
#: The small scenarios: ``small_size`` multiplies their :data:`COUNTRY_SIZE`, ``small_train`` their
#: official train part alone.
SMALL_COUNTRIES = ("NL", "US")
#: Countries whose shared country effect has the opposite sign, in this order (``conflict``
#: takes the first ones).
CONFLICT_ORDER = ("FR", "ES")

# Page sizes: a full page of PAGE_MAX items with probability P_FULL, otherwise uniform in
# 1..PAGE_MAX-1 (mean 14; the real sample rows have pages of 1-20 items, mean 13).
PAGE_MAX = 20
P_FULL = 0.4

N_USER_CAT = 9  # categorical_1..9 are page (user/query) fields, 10..16 item fields
N_USER_NUM = 23  # numerical_1..23 are page fields, 24..63 item fields
N_ITEM_CAT = len(CATEGORICAL) - N_USER_CAT
N_ITEM_NUM = len(NUMERIC) - N_USER_NUM
LATENT = 4  # dimension of the user and item latent factors behind the numeric features

# Calibration sample of the world: this many blocks per country.
CAL_BLOCKS = 4
# Binned oracle AUC: bins per task over a fixed logit range.
AUC_BINS = 1 << 15
_AUC_RANGE = {"ctr": (-14.0, 6.0), "ctcvr": (-22.0, 4.0), "cvr": (-14.0, 8.0)}
TASKS3 = ("ctr", "ctcvr", "cvr")

# Planted logit = intercept + sum of standardised components times these weights. The shared
# components (S: linear + categorical, B: user x item bilinear, X: categorical cross) are also
# multiplied by a per-country scale in [0.8, 1.2].
CLICK_WEIGHTS = {"S": 0.45, "B": 0.60, "X": 0.35, "H": 0.40, "C": 0.55}
PURCHASE_WEIGHTS = {"S": 0.45, "B": 0.30, "X": -0.25, "H": 0.85, "C": 0.55}
# Fields (0-based) with categorical effects, per component.
_SHARED_FIELDS = (0, 2, 4, 9, 10, 11)
_CLICK_FIELDS = (1, 8, 12)
_PURCHASE_FIELDS = (5, 7, 13)
_COUNTRY_CLICK_FIELDS = (6, 0, 14)
_COUNTRY_PURCHASE_FIELDS = (6, 3, 15)
_CROSS = (4, 9)  # categorical_5 x categorical_10
_SEGMENT = 2  # categorical_3: the user segment whose price sensitivity differs
_PRICE = N_USER_NUM + 5  # numerical_29: the "price" column of the purchase task
_STEP_CLICK = N_USER_NUM + 1  # numerical_25, threshold effect on click
_STEP_PURCHASE = N_USER_NUM + 2  # numerical_26, threshold effect on purchase
_NON_SPARSE = (_PRICE, _STEP_CLICK, _STEP_PURCHASE)
STEP_THRESHOLD = 0.6


@dataclass(frozen=True)
class SynthConfig:
    """What defines a generated data set (everything in the cache key).

    Attributes:
        n_rows: Impressions over all five countries and both official parts; a country subset
            keeps exactly its own rows of that data set.
        seed: Generator seed (the planted model and the samples; not the training seed).
        countries: Countries to generate, in canonical order.
        cvr_scale: Multiplies the per-click purchase targets :data:`CVR_TARGET`.
        small_size: Multiplies the relative size of the small countries
            :data:`SMALL_COUNTRIES` (in ``(0, 1]``; 1 keeps the Tianchi proportions).
        small_train: Multiplies the official train part (train and valid rows) of the small
            countries, after ``small_size``, and leaves their test part as it is (in
            ``(0, 1]``): scarce training rows with a test split large enough to measure them.
        country_dev: Size of each country's own deviation from the shared (rank-1) country
            effect, relative to it (``>= 0``; 0 makes every country effect a multiple of one
            shared effect).
        conflict: How many countries (:data:`CONFLICT_ORDER`) have the shared country effect
            with the opposite sign (0, 1 or 2).
        task_share: Correlation of the purchase-specific components with the click-specific
            ones (in ``[0, 1)``; 0 gives independent task-specific effects).
    """

    n_rows: int = 500_000
    seed: int = 0
    countries: tuple[str, ...] = COUNTRIES
    cvr_scale: float = 4.0
    small_size: float = SHARING_DEFAULTS["small_size"]
    small_train: float = SHARING_DEFAULTS["small_train"]
    country_dev: float = SHARING_DEFAULTS["country_dev"]
    conflict: int = int(SHARING_DEFAULTS["conflict"])
    task_share: float = SHARING_DEFAULTS["task_share"]

    def __post_init__(self) -> None:
        object.__setattr__(self, "countries", check_countries(self.countries))
        if not self.countries:
            raise ValueError("no country selected: expected some of " + ", ".join(COUNTRIES))
        if isinstance(self.n_rows, bool) or not isinstance(self.n_rows, int) or self.n_rows < 1:
            raise ValueError(f"n_rows must be a positive integer, got {self.n_rows!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        top = max(CVR_TARGET.values())
        if not (self.cvr_scale > 0 and self.cvr_scale * top < 0.5):
            raise ValueError(
                f"cvr_scale must be in (0, {0.5 / top:.1f}) so that purchase-per-click targets "
                f"stay below 50%, got {self.cvr_scale!r}"
            )
        _check_sharing(self)

    @property
    def sharing(self) -> Sharing:
        """The parameters of the planted model beyond the seed and ``cvr_scale``."""
        return Sharing(self.country_dev, self.conflict, self.task_share)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (with the generator version)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "n_rows": self.n_rows,
            "seed": self.seed,
            "countries": list(self.countries),
            "cvr_scale": self.cvr_scale,
            "small_size": self.small_size,
            "small_train": self.small_train,
            "country_dev": self.country_dev,
            "conflict": self.conflict,
            "task_share": self.task_share,
        }


@dataclass(frozen=True)
class Sharing:
    """What the planted model shares between countries and tasks (see :class:`World`)."""

    country_dev: float = SHARING_DEFAULTS["country_dev"]
    conflict: int = int(SHARING_DEFAULTS["conflict"])
    task_share: float = SHARING_DEFAULTS["task_share"]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_sharing(config: SynthConfig) -> None:
    """One-line :class:`ValueError` naming the first invalid sharing parameter."""

    def fraction(x: Any) -> bool:
        return _is_number(x) and 0 < x <= 1

    checks = (
        ("small_size", fraction(config.small_size), "in (0, 1]"),
        ("small_train", fraction(config.small_train), "in (0, 1]"),
        ("country_dev", _is_number(config.country_dev) and config.country_dev >= 0, ">= 0"),
        (
            "conflict",
            isinstance(config.conflict, int)
            and not isinstance(config.conflict, bool)
            and 0 <= config.conflict <= len(CONFLICT_ORDER),
            f"an integer 0..{len(CONFLICT_ORDER)}",
        ),
        ("task_share", _is_number(config.task_share) and 0 <= config.task_share < 1, "in [0, 1)"),
    )
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"{name} must be {expected}, got {getattr(config, name)!r}")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=key)))


def country_size(small_size: float = 1.0) -> dict[str, float]:
    """Relative size of each country: :data:`COUNTRY_SIZE`, the small ones times ``small_size``."""
    return {c: v * (small_size if c in SMALL_COUNTRIES else 1.0) for c, v in COUNTRY_SIZE.items()}


def stream_rows(
    n_rows: int, small_size: float = 1.0, small_train: float = 1.0
) -> dict[tuple[str, int], int]:
    """Rows of each (country, part) of the full five-country data (part 0 train, 1 test).

    Shares are :func:`country_size` split by :data:`TEST_PER_TRAIN`, the small countries' train
    parts times ``small_train``; integer rows by the largest-remainder rule, so they sum to
    ``n_rows`` exactly.
    """
    keys, weights = [], []
    sizes = country_size(small_size)
    total = sum(sizes.values())
    for c in COUNTRIES:
        r = TEST_PER_TRAIN[c]
        scarce = small_train if c in SMALL_COUNTRIES else 1.0
        for part, share in ((0, scarce / (1 + r)), (1, r / (1 + r))):
            keys.append((c, part))
            weights.append(sizes[c] / total * share)
    exact = np.array(weights) * n_rows
    if small_train != 1:  # only then: at 1 the rows stay those of before the option, to the bit
        exact *= n_rows / exact.sum()
    rows = np.floor(exact).astype(np.int64)
    rest = n_rows - int(rows.sum())
    order = np.argsort(-(exact - rows), kind="stable")
    rows[order[:rest]] += 1
    return {k: int(n) for k, n in zip(keys, rows, strict=True)}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """In-place-friendly logistic function (float32 stays float32)."""
    np.negative(x, out=x)
    with np.errstate(over="ignore"):  # exp overflows to inf: the result is then exactly 0
        np.exp(x, out=x)
    x += 1
    np.reciprocal(x, out=x)
    return x


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def ctcvr_logit(click_logit: np.ndarray, purchase_logit: np.ndarray) -> np.ndarray:
    """Logit of ``P(click) * P(purchase | click)``, computed in log space (float64)."""
    log_p = _log_sigmoid(click_logit.astype(np.float64)) + _log_sigmoid(
        purchase_logit.astype(np.float64)
    )
    # log(1 - exp(log_p)) without cancellation (Maechler's log1mexp).
    with np.errstate(divide="ignore"):  # np.where evaluates the branch it does not use
        log1m = np.where(log_p > -math.log(2), np.log(-np.expm1(log_p)), np.log1p(-np.exp(log_p)))
    return log_p - log1m


def binned_auc(hist: np.ndarray) -> float:
    """AUC from a ``[2, bins]`` histogram (row 0 negatives, row 1 positives) of scores.

    Rows in one bin count as tied (1/2 per positive/negative pair). NaN with one class only.
    """
    neg, pos = hist[0].astype(np.float64), hist[1].astype(np.float64)
    n_neg, n_pos = neg.sum(), pos.sum()
    if n_neg == 0 or n_pos == 0:
        return float("nan")
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (n_neg * n_pos))


class World:
    """The planted model of one seed: feature distributions and the true click/purchase logits.

    Features. A page draws its 9 user categoricals from country-specific Zipf-like
    distributions, then a 4-d user latent (country mean + category embeddings + Gaussian
    noise, with a mild mean drift in the test part); its 23 user numerics are ``sigmoid`` of
    loadings of the latent, mixed with uniform noise, and about 60% of the columns are
    rectified so that they are often exactly 0. Each item draws a 4-d latent tied to its
    page's, its 7 binary categoricals by logistic draws and its 40 numerics like the user ones
    (from both latents). The calibration sample (4 blocks per country, own seeds) fixes the
    component scales and the intercepts.

    Labels. With ``F`` = numerics minus their calibration means, seven raw components are
    standardised (mean 0, sd 1 on the calibration sample): ``S`` shared linear + categorical
    effects, ``B`` a rank-2 user x item bilinear match, ``X`` a categorical_5 x categorical_10
    cross table, ``Hc`` / ``Hp`` task-specific linear + categorical effects plus a threshold on
    one item numeric (and, for purchase, a price slope that depends on categorical_3), and
    ``Cc`` / ``Cp`` country linear + categorical effects. Their weights in country ``c`` are
    ``l_c * shared + country_dev * own_c``: one shared (rank-1) effect per task with a loading
    ``l_c`` in [0.8, 1.2], negated in the ``conflict`` countries (:data:`CONFLICT_ORDER`), plus
    the country's own deviation. With ``r = task_share`` and ``s = sqrt(1 - r^2)``::

        click    = a_c + g_c (.45 S + .60 B + .35 X) + .40 Hc + .55 Cc
        purchase = b_c + g_c (.45 S + .30 B - .25 X)
                       + .85 (r Hc + s Hp) + .55 (r Cc + s Cp)          (given a click)

    ``g_c`` in [0.8, 1.2] scales the shared part per country; the intercepts ``a_c``, ``b_c``
    are calibrated so that each country's train part has the target rates
    :data:`CTR_TARGET` and ``cvr_scale`` x :data:`CVR_TARGET`.
    """

    def __init__(self, seed: int, cvr_scale: float, sharing: Sharing = Sharing()) -> None:
        self.seed = seed
        self.cvr_scale = cvr_scale
        self.sharing = sharing
        rng = _rng(seed, 0)
        # Shared country effect: one direction per task, a loading per country (sign flipped
        # in the conflict countries); each country adds its own deviation (drawn from ``rng``).
        shared_rng = _rng(seed, 3)
        flip = [c in CONFLICT_ORDER[: sharing.conflict] for c in COUNTRIES]
        self.country_loading = (
            shared_rng.uniform(0.8, 1.2, (len(COUNTRIES), 2)) * np.where(flip, -1.0, 1.0)[:, None]
        )
        dev = sharing.country_dev
        n_c = len(COUNTRIES)
        # ---- feature distributions
        self.user_cdf: list[np.ndarray] = []  # per field [C, K]
        self.user_emb: list[np.ndarray] = []  # per field [K + 1, LATENT]
        for f in range(N_USER_CAT):
            k = CODE_COUNTS[f]
            base = -1.2 * np.log1p(rng.permutation(k))
            logp = base[None, :] + rng.normal(0, 0.6, (n_c, k))
            p = np.exp(logp - logp.max(1, keepdims=True))
            cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
            cdf[:, -1] = 1.0
            self.user_cdf.append(cdf.astype(np.float64))
            emb = np.zeros((k + 1, LATENT))
            emb[1:] = rng.normal(0, 0.35, (k, LATENT))
            self.user_emb.append(emb.astype(np.float32))
        self.user_emb_t = [np.ascontiguousarray(e.T) for e in self.user_emb]  # [LATENT, K + 1]
        self.user_mu = rng.normal(0, 0.3, (n_c, LATENT)).astype(np.float32)
        self.item_mu = rng.normal(0, 0.3, (n_c, LATENT)).astype(np.float32)
        # Test-part drift of the latent means (covariate drift; P(labels | features) is fixed).
        self.user_drift = rng.normal(0, 0.15, (n_c, LATENT)).astype(np.float32)
        self.item_drift = rng.normal(0, 0.15, (n_c, LATENT)).astype(np.float32)
        self.item_from_user = rng.normal(0, 0.25, (LATENT, LATENT)).astype(np.float32)
        self.user_load = rng.normal(0, 0.9, (LATENT, N_USER_NUM)).astype(np.float32)
        self.user_bias = rng.normal(-1.2, 0.9, N_USER_NUM).astype(np.float32)
        self.item_load = rng.normal(0, 0.6, (2 * LATENT, N_ITEM_NUM)).astype(np.float32)
        self.item_bias = rng.normal(-1.2, 0.9, N_ITEM_NUM).astype(np.float32)
        # Share of uniform noise mixed into each numeric column.
        self.noise = rng.uniform(0.05, 0.35, len(NUMERIC)).astype(np.float32)
        for j in _NON_SPARSE:  # centred, unrectified columns for the planted threshold/slope
            self.item_bias[j - N_USER_NUM] = 0.0
        # Rectification thresholds: x = max(0, s - t) / (1 - t); t = 0 for dense columns.
        thr = np.zeros(len(NUMERIC), np.float32)
        sparse = rng.random(len(NUMERIC)) < 0.6
        sparse[list(_NON_SPARSE)] = False
        thr[sparse] = rng.uniform(0.15, 0.6, int(sparse.sum()))
        self.threshold = thr
        self.noise_t = self.noise[:, None]
        self.thr_t = thr[:, None]
        self.item_cat_load = rng.normal(0, 0.8, (LATENT, N_ITEM_CAT)).astype(np.float32)
        self.item_cat_bias = (
            rng.normal(-0.8, 1.0, N_ITEM_CAT)[None, :] + rng.normal(0, 0.4, (n_c, N_ITEM_CAT))
        ).astype(np.float32)
        # ---- label model
        n_num = len(NUMERIC)

        def sparse_weights(n_active: int) -> np.ndarray:
            w = np.zeros(n_num)
            w[rng.choice(n_num, n_active, replace=False)] = rng.normal(0, 1, n_active)
            return w

        def shared_sparse(n_active: int) -> np.ndarray:
            w = np.zeros(n_num)
            w[shared_rng.choice(n_num, n_active, replace=False)] = shared_rng.normal(0, 1, n_active)
            return w

        shared = rng.normal(0, 1, n_num)
        click = sparse_weights(15)
        purchase = sparse_weights(15)
        proj = np.zeros((n_num, 4))
        proj[:N_USER_NUM, :2] = rng.normal(0, 1, (N_USER_NUM, 2))  # user side P
        proj[N_USER_NUM:, 2:] = rng.normal(0, 1, (N_ITEM_NUM, 2))  # item side Q
        base = (shared_sparse(12), shared_sparse(12))  # shared country effect, click / purchase
        load = self.country_loading
        # Per-country linear weights [num, 9]: S, Hc, Hp, Cc, Cp, P1, P2, Q1, Q2.
        self.linear = np.stack(
            [
                np.column_stack(
                    [
                        shared,
                        click,
                        purchase,
                        load[c, 0] * base[0] + dev * sparse_weights(12),
                        load[c, 1] * base[1] + dev * sparse_weights(12),
                        proj,
                    ]
                )
                for c in range(n_c)
            ]
        ).astype(np.float32)
        # Per-country categorical tables per field [C, K + 1, 5] (S, Hc, Hp, Cc, Cp); id 0 = 0.
        self.cat_tables = []
        for f in range(len(CATEGORICAL)):
            t = np.zeros((n_c, CODE_COUNTS[f] + 1, 5), np.float32)
            k = CODE_COUNTS[f]
            for comp, fields in enumerate(
                (_SHARED_FIELDS, _CLICK_FIELDS, _PURCHASE_FIELDS), start=0
            ):
                if f in fields:
                    t[:, 1:, comp] = rng.normal(0, 1, k)[None, :]
            for comp, fields in ((3, _COUNTRY_CLICK_FIELDS), (4, _COUNTRY_PURCHASE_FIELDS)):
                if f in fields:
                    own = dev * rng.normal(0, 1, (n_c, k))
                    t[:, 1:, comp] = load[:, comp - 3, None] * shared_rng.normal(0, 1, k) + own
            self.cat_tables.append(t)
        # All fields' tables stacked [C, 5, sum(K + 1)]; a row's ids + offsets index them.
        self.cat_flat = np.ascontiguousarray(
            np.concatenate(self.cat_tables, axis=1).transpose(0, 2, 1)
        )
        self.cat_offset = np.cumsum([0] + [k + 1 for k in CODE_COUNTS[:-1]]).astype(np.int32)
        # Centring of the numerics (column means of the calibration sample; set there).
        self.num_center = np.full(len(NUMERIC), 0.5, np.float32)
        self.linear_offset = np.zeros((n_c, self.linear.shape[2]), np.float32)
        self.cross = np.zeros((CODE_COUNTS[_CROSS[0]] + 1, CODE_COUNTS[_CROSS[1]] + 1), np.float32)
        self.cross[1:, 1:] = rng.normal(0, 1, (CODE_COUNTS[_CROSS[0]], CODE_COUNTS[_CROSS[1]]))
        self.price_slope = np.zeros(CODE_COUNTS[_SEGMENT] + 1, np.float32)
        self.price_slope[1:] = -rng.uniform(0.5, 4.0, CODE_COUNTS[_SEGMENT])
        self.shared_scale = rng.uniform(0.8, 1.2, n_c).astype(np.float32)
        # ---- calibration: component standardisation, then intercepts
        self.center = np.zeros(5)
        self.scale = np.ones(5)
        self.country_center = np.zeros((n_c, 2))
        self.country_scale = np.ones((n_c, 2))
        self.click_bias = np.zeros(n_c)
        self.purchase_bias = np.zeros(n_c)
        self._calibrate()

    # ------------------------------------------------------------------ features
    def features(self, country: int, part: int, rngs: Sequence, sizes: Sequence) -> tuple:
        """Features of consecutive blocks of one stream.

        Everything is computed feature-major (``[F, N]``) with element-wise operations only:
        BLAS products are not bitwise stable under a change of a row's position, and the output
        must not depend on how blocks are grouped into chunks.

        Args:
            country: Index in :data:`COUNTRIES`.
            part: 0 official train, 1 official test (drifted latent means).
            rngs: Per block, its content generator.
            sizes: Per block, its page sizes (int64 array).

        Returns:
            ``(categorical [N, 16] int8, numeric [63, N] float32, label uniforms [2, N])``.
        """
        n_pages = sum(len(s) for s in sizes)
        n_rows = int(sum(int(s.sum()) for s in sizes))
        page_eps = np.empty((LATENT, n_pages), np.float32)
        page_u = np.empty((N_USER_CAT + N_USER_NUM, n_pages), np.float32)
        item_eps = np.empty((LATENT, n_rows), np.float32)
        item_u = np.empty((N_ITEM_CAT + N_ITEM_NUM + 2, n_rows), np.float32)
        p0 = r0 = 0
        for rng, s in zip(rngs, sizes, strict=True):
            p1, r1 = p0 + len(s), r0 + int(s.sum())
            # Fixed draws per block: a block's content depends on the block only.
            page_eps[:, p0:p1] = rng.standard_normal((LATENT, p1 - p0), dtype=np.float32)
            page_u[:, p0:p1] = rng.random(page_u[:, p0:p1].shape, dtype=np.float32)
            item_eps[:, r0:r1] = rng.standard_normal((LATENT, r1 - r0), dtype=np.float32)
            item_u[:, r0:r1] = rng.random(item_u[:, r0:r1].shape, dtype=np.float32)
            p0, r0 = p1, r1
        page_of_row = np.repeat(np.arange(n_pages), np.concatenate(sizes))

        # Page (user/query) level: categoricals, latent, numerics.
        user_cat = np.empty((n_pages, N_USER_CAT), np.int8)
        zu = page_eps
        zu += (self.user_mu[country] + (self.user_drift[country] if part else 0))[:, None]
        for f in range(N_USER_CAT):
            ids = np.searchsorted(self.user_cdf[f][country], page_u[f], side="right") + 1
            np.minimum(ids, CODE_COUNTS[f], out=ids)
            user_cat[:, f] = ids
            zu += self.user_emb_t[f][:, ids]
        user_num = _tdot(self.user_load, zu)
        user_num += self.user_bias[:, None]
        _sigmoid(user_num)
        _mix_rectify(
            user_num, page_u[N_USER_CAT:], self.noise_t[:N_USER_NUM], self.thr_t[:N_USER_NUM]
        )

        # Item level: latent tied to the page's, binary categoricals, numerics.
        zz = np.empty((2 * LATENT, n_rows), np.float32)  # item latent, then the user latent
        np.take(zu, page_of_row, axis=1, out=zz[LATENT:])
        zi = zz[:LATENT]
        np.add(item_eps, _tdot(self.item_from_user, zz[LATENT:]), out=zi)
        zi += (self.item_mu[country] + (self.item_drift[country] if part else 0))[:, None]
        p_cat = _tdot(self.item_cat_load, zi)
        p_cat += self.item_cat_bias[country][:, None]
        _sigmoid(p_cat)
        cat = np.empty((n_rows, len(CATEGORICAL)), np.int8)
        cat[:, :N_USER_CAT] = user_cat[page_of_row]
        cat[:, N_USER_CAT:] = (item_u[:N_ITEM_CAT] < p_cat).T
        cat[:, N_USER_CAT:] += 1
        num = np.empty((len(NUMERIC), n_rows), np.float32)
        np.take(user_num, page_of_row, axis=1, out=num[:N_USER_NUM])
        item_num = num[N_USER_NUM:]
        item_num[:] = _tdot(self.item_load, zz)
        item_num += self.item_bias[:, None]
        _sigmoid(item_num)
        _mix_rectify(
            item_num,
            item_u[N_ITEM_CAT : N_ITEM_CAT + N_ITEM_NUM],
            self.noise_t[N_USER_NUM:],
            self.thr_t[N_USER_NUM:],
        )
        return cat, num, item_u[N_ITEM_CAT + N_ITEM_NUM :]

    # ------------------------------------------------------------------ labels
    def _raw(self, country: int, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """The seven raw components ``[7, N]`` (S, B, X, Hc, Hp, Cc, Cp) of ``num`` ``[63, N]``."""
        lin = _tdot(self.linear[country], num)  # [9, N] of (num - centre) @ W, centre below
        lin -= self.linear_offset[country][:, None]
        idx = (cat + self.cat_offset).T  # [16, N] rows of the stacked tables
        catsum = np.empty((5, len(cat)), np.float32)
        for j, table in enumerate(self.cat_flat[country]):  # fixed order of the 16 fields
            np.take(table, idx[0], out=catsum[j])
            for f in range(1, len(CATEGORICAL)):
                catsum[j] += table[idx[f]]
        raw = np.empty((7, len(cat)), np.float32)
        np.add(lin[0], catsum[0], out=raw[0])
        raw[1] = lin[5] * lin[7] + lin[6] * lin[8]
        raw[2] = self.cross[cat[:, _CROSS[0]], cat[:, _CROSS[1]]]
        raw[3] = lin[1] + catsum[1] + 1.5 * (num[_STEP_CLICK] > STEP_THRESHOLD)
        raw[4] = (
            lin[2]
            + catsum[2]
            + 1.5 * (num[_STEP_PURCHASE] > STEP_THRESHOLD)
            + self.price_slope[cat[:, _SEGMENT]] * (num[_PRICE] - self.num_center[_PRICE])
        )
        np.add(lin[3], catsum[3], out=raw[5])
        np.add(lin[4], catsum[4], out=raw[6])
        return raw

    def _standardise(self, country: int, raw: np.ndarray) -> np.ndarray:
        z = raw.astype(np.float64)
        z[:5] -= self.center[:, None]
        z[:5] /= self.scale[:, None]
        z[5:] -= self.country_center[country][:, None]
        z[5:] /= self.country_scale[country][:, None]
        return z

    def logits(self, country: int, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
        """True ``[2, N]`` float64 logits of P(click) and P(purchase | click)."""
        return self._combine(country, self._standardise(country, self._raw(country, cat, num)))

    def _combine(self, country: int, z: np.ndarray, with_bias: bool = True) -> np.ndarray:
        g = float(self.shared_scale[country])
        out = np.empty((2, z.shape[1]))
        r = self.sharing.task_share
        own = math.sqrt(1 - r * r)
        for t, w, h, c in ((0, CLICK_WEIGHTS, 3, 5), (1, PURCHASE_WEIGHTS, 4, 6)):
            out[t] = g * (w["S"] * z[0] + w["B"] * z[1] + w["X"] * z[2])
            if t == 0:
                out[t] += w["H"] * z[h] + w["C"] * z[c]
            else:  # purchase: loads on the click-specific components too
                out[t] += w["H"] * (r * z[3] + own * z[h]) + w["C"] * (r * z[5] + own * z[c])
        if with_bias:
            out[0] += self.click_bias[country]
            out[1] += self.purchase_bias[country]
        return out

    # ------------------------------------------------------------------ calibration
    def _calibrate(self) -> None:
        samples = []
        for c in range(len(COUNTRIES)):
            rngs, sizes = [], []
            for b in range(CAL_BLOCKS):
                sizes.append(_page_sizes(_rng(self.seed, 2, c, b, 0), BLOCK_ROWS))
                rngs.append(_rng(self.seed, 2, c, b, 1))
            samples.append(self.features(c, 0, rngs, sizes)[:2])
        # Centre the numerics at their means, so that the bilinear and slope terms carry no
        # linear main effect that a logistic regression could pick up.
        self.num_center = np.concatenate([n for _, n in samples], axis=1).mean(1, np.float32)
        self.linear_offset = np.einsum("k,ckm->cm", self.num_center, self.linear).astype(np.float32)
        raws = [self._raw(c, cat, num).astype(np.float64) for c, (cat, num) in enumerate(samples)]
        pooled = np.concatenate(raws, axis=1)
        self.center = pooled[:5].mean(1)
        self.scale = pooled[:5].std(1)
        for c, raw in enumerate(raws):
            self.country_center[c] = raw[5:].mean(1)
            self.country_scale[c] = raw[5:].std(1)
            eta = self._combine(c, self._standardise(c, raw), with_bias=False)
            name = COUNTRIES[c]
            self.click_bias[c] = _solve_bias(eta[0], CTR_TARGET[name])
            p_click = _expit(eta[0] + self.click_bias[c])
            self.purchase_bias[c] = _solve_bias(
                eta[1], CVR_TARGET[name] * self.cvr_scale, weights=p_click
            )

    def describe(self) -> dict[str, Any]:
        """The planted model's documented parameters (for the run record)."""

        def formula(bias: str, w: Mapping[str, float], task: str) -> str:
            return (
                f"{bias} + g_c*({w['S']:+.2f} S {w['B']:+.2f} B {w['X']:+.2f} X) "
                f"{w['H']:+.2f} H{task} {w['C']:+.2f} C{task}"
            )

        return {
            "click_logit": formula("a_c", CLICK_WEIGHTS, "c"),
            "purchase_given_click_logit": formula("b_c", PURCHASE_WEIGHTS, "p"),
            "components": (
                "standardised: S shared linear + categorical (fields 1,3,5,10,11,12), "
                "B rank-2 user x item bilinear, X categorical_5 x categorical_10 table, "
                "Hc click-only linear + categorical (2,9,13) + step on numerical_25, "
                "Hp purchase-only linear + categorical (6,8,14) + step on numerical_26 + "
                "categorical_3-dependent slope on numerical_29, Cc/Cp country-specific linear + "
                "categorical (7,1,15 / 7,4,16) with their own weights per country"
            ),
            "shared_scale_g": dict(
                zip(COUNTRIES, np.round(self.shared_scale.astype(float), 4).tolist())
            ),
            "click_intercept_a": dict(zip(COUNTRIES, np.round(self.click_bias, 4).tolist())),
            "purchase_intercept_b": dict(zip(COUNTRIES, np.round(self.purchase_bias, 4).tolist())),
            "ctr_target": dict(CTR_TARGET),
            "cvr_target": {c: round(CVR_TARGET[c] * self.cvr_scale, 6) for c in COUNTRIES},
            "test_drift": "latent means shifted by N(0, 0.15^2) per country and dimension",
            "sharing": {
                "country_effect": (
                    "weights of Cc / Cp in country c = loading_c * shared + country_dev * own_c"
                ),
                "country_loading_click_purchase": dict(
                    zip(COUNTRIES, np.round(self.country_loading, 4).tolist())
                ),
                "country_dev": self.sharing.country_dev,
                "conflict_countries": list(CONFLICT_ORDER[: self.sharing.conflict]),
                "task_share": self.sharing.task_share,
                "purchase_task_parts": (
                    "Hp and Cp enter as task_share * (Hc, Cc) + sqrt(1 - task_share^2) * (Hp, Cp)"
                ),
            },
        }


def _tdot(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``w.T @ x`` for ``w`` ``[K, M]`` and feature-major ``x`` ``[K, N]``: ``[M, N]``.

    Summed over ``k`` in a fixed order with element-wise operations, so each column of the
    result is bitwise the same wherever it sits in ``x`` (a BLAS product is not).
    """
    out = np.multiply.outer(w[0], x[0])
    tmp = np.empty_like(out)
    for k in range(1, len(w)):
        np.multiply.outer(w[k], x[k], out=tmp)
        out += tmp
    return out


def _mix_rectify(x: np.ndarray, u: np.ndarray, share: np.ndarray, thr: np.ndarray) -> None:
    """In place: ``x = max(0, (1 - share) x + share u - thr) / (1 - thr)``, in ``[0, 1]``."""
    x *= 1 - share
    x += u * share
    x -= thr
    np.maximum(x, 0, out=x)
    x /= 1 - thr
    np.minimum(x, 1, out=x)


@functools.lru_cache(maxsize=4)
def world_of(seed: int, cvr_scale: float, sharing: Sharing = Sharing()) -> World:
    """The (cached, read-only) planted model of ``seed``."""
    return World(seed, cvr_scale, sharing)


def _expit(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _solve_bias(eta: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """Intercept ``b`` with ``mean(sigmoid(eta + b))`` (weighted) equal to ``target``.

    Fixed-point iteration on the logit of the mean rate, which is increasing in ``b`` with a
    slope at most 1, so every step moves towards the root without overshooting.
    """
    w = np.ones_like(eta) if weights is None else weights
    total = w.sum()
    goal = math.log(target / (1 - target))
    b = goal - float(np.median(eta))
    for _ in range(200):
        rate = float((w * _expit(eta + b)).sum() / total)
        step = goal - math.log(rate / (1 - rate))
        b += step
        if abs(step) < 1e-9:
            break
    return b


def _page_sizes(rng: np.random.Generator, n_rows: int) -> np.ndarray:
    """Sizes of the pages that fill a block of ``n_rows`` rows (the last page is cut)."""
    u = rng.random(n_rows)  # one draw per possible page: always enough
    sizes = np.where(
        u < P_FULL, PAGE_MAX, 1 + ((u - P_FULL) / (1 - P_FULL) * (PAGE_MAX - 1)).astype(np.int64)
    )
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, n_rows))
    sizes = sizes[: k + 1].copy()
    sizes[-1] -= ends[k] - n_rows
    return sizes


@dataclass
class _Stream:
    """One country's official train or test part."""

    country: int  # index in COUNTRIES
    scenario: int  # index in the selected countries
    part: int  # 0 train, 1 test
    n_rows: int
    lengths: np.ndarray  # [n_blocks] rows per block
    valid_rows: np.ndarray  # [n_blocks] rows of held-out pages (0 for test streams)
    offsets: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def code(self) -> int:
        """Stream number in the seeds and the search ids (1-10)."""
        return 2 * self.country + self.part + 1

    @property
    def n_blocks(self) -> int:
        return len(self.lengths)

    def search_ids(self, block: int, sizes: np.ndarray) -> np.ndarray:
        """Search id of each page of ``block``: ``code << 40 | row of its first item``."""
        starts = np.cumsum(sizes) - sizes + block * BLOCK_ROWS
        return (np.int64(self.code) << np.int64(40)) + starts.astype(np.int64)


def _plan(config: SynthConfig) -> list[_Stream]:
    """Pass 1: blocks, held-out rows and output offsets of every stream."""
    rows = stream_rows(config.n_rows, config.small_size, config.small_train)
    streams = []
    for scen, name in enumerate(config.countries):
        country = COUNTRIES.index(name)
        for part in (0, 1):
            n = rows[(name, part)]
            n_blocks = -(-n // BLOCK_ROWS)
            lengths = np.full(n_blocks, BLOCK_ROWS, np.int64)
            if n_blocks:
                lengths[-1] = n - BLOCK_ROWS * (n_blocks - 1)
            s = _Stream(country, scen, part, n, lengths, np.zeros(n_blocks, np.int64))
            if part == 0:
                for b in range(n_blocks):
                    sizes = _page_sizes(_rng(config.seed, 1, s.code, b, 0), int(lengths[b]))
                    held = holdout_mask(s.search_ids(b, sizes), VALID_FRACTION, SPLIT_SALT)
                    s.valid_rows[b] = sizes[held].sum()
            streams.append(s)
    # Interleave the streams' blocks in each split in proportion to their sizes, so that any
    # window of consecutive rows (block-shuffled memory-mapped training) mixes the countries.
    for split in SPLITS:
        entries = []
        for i, s in enumerate(streams):
            if (split == "test") != (s.part == 1):
                continue
            count = {"train": s.lengths - s.valid_rows, "valid": s.valid_rows, "test": s.lengths}
            for b in range(s.n_blocks):
                entries.append(((b + 0.5) / s.n_blocks, s.code, i, b, int(count[split][b])))
            s.offsets[split] = np.zeros(s.n_blocks, np.int64)
        entries.sort()
        pos = 0
        for _, _, i, b, n in entries:
            streams[i].offsets[split][b] = pos
            pos += n
    return streams


def split_sizes(streams: Sequence[_Stream]) -> dict[str, int]:
    """Rows of each split."""
    out = dict.fromkeys(SPLITS, 0)
    for s in streams:
        if s.part == 0:
            out["valid"] += int(s.valid_rows.sum())
            out["train"] += s.n_rows - int(s.valid_rows.sum())
        else:
            out["test"] += s.n_rows
    return out


@dataclass
class Generated:
    """The output of :func:`generate`.

    Attributes:
        config: The parameters.
        arrays: ``{split: {name: array}}`` with the names and dtypes of :data:`ARRAYS`.
        info: Parameters, per-country counts and rates, binned oracle AUCs and timings.
    """

    config: SynthConfig
    arrays: dict[str, dict[str, np.ndarray]]
    info: dict[str, Any]


Allocate = Callable[[str, str, tuple[int, ...], Any], np.ndarray]


def _allocate_numpy(split: str, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    return np.empty(shape, dtype)


def generate(
    config: SynthConfig,
    allocate: Allocate | None = None,
    chunk_rows: int = 65_536,
    log: Callable[[str], None] | None = None,
) -> Generated:
    """Generate the data set of ``config`` into preallocated arrays.

    Args:
        config: What to generate.
        allocate: ``allocate(split, name, shape, dtype) -> array`` for each output array
            (default: ``numpy.empty``); for example memory-mapped ``.npy`` files.
        chunk_rows: Rows generated at a time (rounded to whole blocks); does not change the
            output, only the peak memory and the speed.
        log: Progress lines (about every 5 seconds), if given.

    Returns:
        The arrays and their facts.
    """
    started = time.perf_counter()
    world = world_of(config.seed, config.cvr_scale, config.sharing)
    calibrated = time.perf_counter()
    streams = _plan(config)
    sizes_by_split = split_sizes(streams)
    empty = [k for k, n in sizes_by_split.items() if n == 0]
    if empty:
        raise ValueError(
            f"n_rows={config.n_rows:,} is too small: the {' and '.join(empty)} split(s) of "
            f"{', '.join(config.countries)} would be empty"
        )
    alloc = allocate or _allocate_numpy
    arrays = {
        split: {
            name: alloc(split, name, (sizes_by_split[split], *tail), dtype)
            for name, (tail, dtype) in ARRAYS.items()
        }
        for split in SPLITS
    }
    n_scen = len(config.countries)
    counts = {s: np.zeros((n_scen, 3), np.int64) for s in SPLITS}  # rows, clicks, purchases
    hists = {s: np.zeros((n_scen, 3, 2, AUC_BINS), np.int64) for s in SPLITS}
    blocks_per_chunk = max(1, chunk_rows // BLOCK_ROWS)
    done, last_log = 0, time.perf_counter()
    total_selected = sum(s.n_rows for s in streams)

    for s in streams:
        for b0 in range(0, s.n_blocks, blocks_per_chunk):
            blocks = range(b0, min(b0 + blocks_per_chunk, s.n_blocks))
            chunk, held, scores = _chunk(world, config.seed, s, blocks)
            _scatter(arrays, s, blocks, chunk, held)
            _accumulate(counts, hists, s, chunk["labels"], held, scores)
            done += len(held)
            if log is not None and time.perf_counter() - last_log > 5:
                last_log = time.perf_counter()
                rate = done / (last_log - started)
                log(f"aliexpress-synth: {done:,} of {total_selected:,} rows ({rate:,.0f} rows/s)")
    seconds = time.perf_counter() - started
    info = _info(config, world, streams, counts, hists, sizes_by_split)
    info["generation_seconds"] = round(seconds, 3)
    info["calibration_seconds"] = round(calibrated - started, 3)
    info["rows_per_second"] = round(total_selected / seconds) if seconds else None
    return Generated(config, arrays, info)


def _chunk(world: World, seed: int, s: _Stream, blocks: range) -> tuple:
    """Rows of consecutive blocks of stream ``s``.

    Returns:
        ``(arrays by name [N, ...], held [N] bool (page held out for validation), true logits
        by task ctr / ctcvr / cvr [N] float64)``.
    """
    sizes = [_page_sizes(_rng(seed, 1, s.code, b, 0), int(s.lengths[b])) for b in blocks]
    rngs = [_rng(seed, 1, s.code, b, 1) for b in blocks]
    cat, num, label_u = world.features(s.country, s.part, rngs, sizes)
    eta = world.logits(s.country, cat, num)  # [2, N]
    page_rows = np.concatenate(sizes)
    page_ids = np.concatenate([s.search_ids(b, z) for b, z in zip(blocks, sizes, strict=True)])
    if s.part == 0:
        held = np.repeat(holdout_mask(page_ids, VALID_FRACTION, SPLIT_SALT), page_rows)
    else:
        held = np.zeros(len(cat), bool)
    click = label_u[0] < _expit(eta[0])
    purchase = click & (label_u[1] < _expit(eta[1]))  # purchase implies click
    scores = {"ctr": eta[0], "ctcvr": ctcvr_logit(eta[0], eta[1]), "cvr": eta[1]}
    chunk = {
        "categorical": cat,
        "numeric": num.T,  # [N, 63] view of the feature-major block
        "scenario": np.full(len(cat), s.scenario, np.int8),
        "labels": np.stack([click, purchase], 1).astype(np.float32),
        "oracle": np.stack([scores["ctr"], scores["ctcvr"]], 1).astype(np.float32),
        "search_id": np.repeat(page_ids, page_rows),
    }
    return chunk, held, scores


def _scatter(arrays: dict, s: _Stream, blocks: range, chunk: dict, held: np.ndarray) -> None:
    """Copy each block's rows of ``chunk`` to its place in the split(s) it feeds."""
    r0 = 0
    for b in blocks:
        r1 = r0 + int(s.lengths[b])
        if s.part == 1:
            parts = (("test", np.arange(r0, r1)),)
        else:
            rows = np.arange(r0, r1)
            parts = (("train", rows[~held[r0:r1]]), ("valid", rows[held[r0:r1]]))
        for split, rows in parts:
            off = int(s.offsets[split][b])
            for name, values in chunk.items():
                arrays[split][name][off : off + len(rows)] = values[rows]
        r0 = r1


def _accumulate(
    counts: dict, hists: dict, s: _Stream, labels: np.ndarray, held: np.ndarray, scores: dict
) -> None:
    """Add a chunk's rows, clicks, purchases and oracle-score histograms to the totals."""
    click, purchase = labels[:, 0] > 0, labels[:, 1] > 0
    masks = {"test": ~held} if s.part == 1 else {"train": ~held, "valid": held}
    scenario = s.scenario
    for split, m in masks.items():
        c, p = click[m], purchase[m]
        counts[split][scenario] += (int(m.sum()), int(c.sum()), int(p.sum()))
        for t, task in enumerate(TASKS3):
            lo, hi = _AUC_RANGE[task]
            x, y = scores[task][m], (c if task == "ctr" else p)
            if task == "cvr":
                x, y = x[c], y[c]
            bins = np.clip(((x - lo) * (AUC_BINS / (hi - lo))).astype(np.int64), 0, AUC_BINS - 1)
            bins += y * AUC_BINS
            hists[split][scenario, t] += np.bincount(bins, minlength=2 * AUC_BINS).reshape(
                2, AUC_BINS
            )


def _info(config, world, streams, counts, hists, sizes_by_split) -> dict[str, Any]:
    countries = config.countries
    per_split: dict[str, Any] = {}
    auc: dict[str, Any] = {}
    for split in SPLITS:
        c = counts[split]
        rows = {
            name: {"rows": int(c[i, 0]), "clicks": int(c[i, 1]), "purchases": int(c[i, 2])}
            for i, name in enumerate(countries)
        }
        tot = c.sum(0)
        rows["pooled"] = {"rows": int(tot[0]), "clicks": int(tot[1]), "purchases": int(tot[2])}
        for r in rows.values():
            r["ctr"] = r["clicks"] / r["rows"] if r["rows"] else None
            r["ctcvr"] = r["purchases"] / r["rows"] if r["rows"] else None
            r["cvr"] = r["purchases"] / r["clicks"] if r["clicks"] else None
        per_split[split] = rows
        h = hists[split]
        auc[split] = {
            name: {t: _round(binned_auc(h[i, k])) for k, t in enumerate(TASKS3)}
            for i, name in enumerate(countries)
        }
        auc[split]["pooled"] = {t: _round(binned_auc(h[:, k].sum(0))) for k, t in enumerate(TASKS3)}
    return {
        "generator": "mssbench_aliexpress_synth",
        "synthetic": True,
        "params": config.to_dict(),
        "rows": dict(sizes_by_split),
        "counts": per_split,
        "oracle_auc": auc,
        "oracle_auc_method": (
            f"from {AUC_BINS}-bin histograms of the true logits (ties within a bin count 1/2; "
            "within about 1e-4 of the exact AUC); cvr on clicked rows"
        ),
        "planted_model": world.describe(),
        "layout": {
            "block_rows": BLOCK_ROWS,
            "page_size": f"{PAGE_MAX} with probability {P_FULL}, else uniform 1..{PAGE_MAX - 1}",
            "country_size": country_size(config.small_size),
            "test_per_train": dict(TEST_PER_TRAIN),
            "stream_rows": {
                f"{COUNTRIES[s.country]}/{('train', 'test')[s.part]}": s.n_rows for s in streams
            },
            "pages": {
                "valid_fraction": VALID_FRACTION,
                "split_salt": SPLIT_SALT,
            },
        },
    }


def _round(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 5)
