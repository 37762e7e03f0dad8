"""Power-law fits ``L(x) = a * x**(-b) + L_inf`` with bootstrap intervals."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

#: Bootstrap resamples of a fit's points.
BOOTSTRAP = 300
#: Central interval of the bootstrap (95%).
LEVEL = 0.95
#: Distinct x values a fit needs (three parameters, and one point to spare).
MIN_DISTINCT_X = 4
#: Largest exponent a fit may take.
MAX_EXPONENT = 5.0
#: Least squares' ``ftol``, ``xtol`` and ``gtol``. SciPy's 1e-8 stops while a small reducible
#: term (0.5 * x**-0.94 over a loss of 0.01) still moves the exponent by 0.03.
FIT_TOLERANCE = 1e-14


@dataclass(frozen=True)
class PowerLaw:
    """A fitted ``L(x) = a * x**(-b) + l_inf`` with 95% bootstrap intervals.

    Attributes:
        a: Scale.
        b: Exponent (how fast the reducible loss falls).
        l_inf: Irreducible loss (the fit's asymptote).
        r2: Coefficient of determination on the fitted points.
        n_points: Points fitted (every seed of every grid point).
        b_low, b_high, l_inf_low, l_inf_high: Residual-bootstrap interval bounds (NaN when
            too few resamples could be fitted).
        n_boot: Resamples that could be fitted.
    """

    a: float
    b: float
    l_inf: float
    r2: float
    n_points: int
    b_low: float = math.nan
    b_high: float = math.nan
    l_inf_low: float = math.nan
    l_inf_high: float = math.nan
    n_boot: int = 0

    @property
    def at_bound(self) -> bool:
        """The exponent sits at a bound of the fit (0 or :data:`MAX_EXPONENT`): no power law."""
        return self.b < 1e-3 or self.b > MAX_EXPONENT - 1e-3

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted loss at ``x``."""
        return self.a * np.asarray(x, dtype=float) ** (-self.b) + self.l_inf

    def to_dict(self) -> dict[str, Any]:
        """Fields as a JSON-serialisable dict (NaN as ``None``)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


def _law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * x ** (-b) + c


def _fit_once(
    x: np.ndarray, y: np.ndarray, l_inf: float | None = None
) -> tuple[float, float, float] | None:
    """``(a, b, l_inf)`` by least squares on ``x`` scaled to geometric mean 1, or ``None``.

    With ``l_inf`` given, only ``a`` and ``b`` are fitted and the asymptote stays there.
    """
    scale = math.exp(float(np.mean(np.log(x))))
    xs = x / scale
    low = float(np.min(y))
    if l_inf is None:
        law, p0 = _law, (max(float(np.max(y)) - 0.9 * low, 1e-6), 0.5, 0.9 * low)
        bounds = ([0.0, 0.0, 0.0], [np.inf, MAX_EXPONENT, low])
    else:

        def law(x: np.ndarray, a: float, b: float) -> np.ndarray:
            return _law(x, a, b, l_inf)

        p0 = (max(float(np.mean(y)) - l_inf, 1e-6), 0.5)
        bounds = ([0.0, 0.0], [np.inf, MAX_EXPONENT])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(
                law,
                xs,
                y,
                p0=p0,
                bounds=bounds,
                maxfev=20000,
                ftol=FIT_TOLERANCE,
                xtol=FIT_TOLERANCE,
                gtol=FIT_TOLERANCE,
            )
    except (RuntimeError, ValueError):
        return None
    a, b = float(params[0]), float(params[1])
    return a * scale**b, b, float(params[2]) if l_inf is None else float(l_inf)


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = BOOTSTRAP,
    seed: int = 0,
    l_inf: float | None = None,
) -> PowerLaw | None:
    """Fit ``y = a * x**(-b) + l_inf`` with residual-bootstrap intervals on b and l_inf.

    Args:
        x: Positive sizes (parameters, rows, FLOPs, batch), one per point and seed.
        y: Losses, same length.
        n_boot: Bootstrap resamples (:func:`_bootstrap`).
        seed: Seed of the resampling.
        l_inf: A known irreducible loss (the twin's Bayes loss): when given, the asymptote is
            held there and only ``a`` and ``b`` are fitted (the exponent of the excess loss),
            which a short grid identifies where the three-parameter fit cannot.

    Returns:
        The fit, or ``None`` with fewer than :data:`MIN_DISTINCT_X` distinct ``x`` values or
        when least squares does not converge.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    x, y = x[keep], y[keep]
    if len(np.unique(x)) < MIN_DISTINCT_X:
        return None
    best = _fit_once(x, y, l_inf)
    if best is None:
        return None
    a, b, c = best
    resid = y - _law(x, a, b, c)
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / total if total > 0 else math.nan
    draws = _bootstrap(x, y, best, n_boot, seed, l_inf)
    if len(draws) < max(10, n_boot // 4):
        return PowerLaw(a, b, c, r2, len(x), n_boot=len(draws))
    tail = (1 - LEVEL) / 2 * 100
    b_lo, b_hi = np.percentile(draws[:, 1], [tail, 100 - tail])
    c_lo, c_hi = np.percentile(draws[:, 2], [tail, 100 - tail])
    bounds = (float(b_lo), float(b_hi), float(c_lo), float(c_hi))
    return PowerLaw(a, b, c, r2, len(x), *bounds, n_boot=len(draws))


def _bootstrap(
    x: np.ndarray,
    y: np.ndarray,
    fitted: tuple[float, float, float],
    n_boot: int,
    seed: int,
    l_inf: float | None = None,
) -> np.ndarray:
    """Fits of ``n_boot`` residual resamples (rows ``(a, b, l_inf)``); failed fits left out.

    Each resample keeps every point's ``x`` and adds to the fitted curve the residuals of all
    points and seeds drawn with replacement, so the interval reflects both the spread over
    seeds and the misfit between grid points, even with one seed per point.
    """
    rng = np.random.default_rng(seed)
    curve = _law(x, *fitted)
    resid = y - curve
    picks = rng.integers(0, len(x), size=(n_boot, len(x)))
    fits = [_fit_once(x, curve + resid[idx], l_inf) for idx in picks]
    return np.asarray([f for f in fits if f is not None], dtype=float).reshape(-1, 3)
