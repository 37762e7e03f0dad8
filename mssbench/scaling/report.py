"""What a scaling study reports: fits with intervals, the compute frontier, plots, a page."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mssbench.scaling.fit import BOOTSTRAP, PowerLaw, fit_power_law
from mssbench.scaling.study import X_COLUMN

#: Axis labels of the plots and tables.
X_LABEL = {
    "params": "dense (non-embedding) parameters",
    "data": "training rows",
    "compute": "training FLOPs (matmul, forward + backward)",
    "batch": "batch size",
}


def tasks(frame: pd.DataFrame) -> list[str]:
    """Tasks with a test loss column, in column order."""
    return [c.split("/", 1)[1] for c in frame.columns if c.startswith("test/")]


def fits(
    frame: pd.DataFrame, axis: str, n_boot: int = BOOTSTRAP
) -> list[tuple[str, str, str, PowerLaw | None]]:
    """``(model, task, split, fit)`` for every model, task and split (valid, test)."""
    out = []
    for model, rows in frame.groupby("model", sort=True):
        for task in tasks(frame):
            for split in ("valid", "test"):
                y = pd.to_numeric(rows[f"{split}/{task}"], errors="coerce").to_numpy(float)
                out.append((model, task, split, fit_power_law(rows[X_COLUMN[axis]], y, n_boot)))
    return out


def anchored_fits(
    frame: pd.DataFrame, axis: str, n_boot: int = BOOTSTRAP
) -> dict[tuple[str, str, str], PowerLaw | None]:
    """Test-loss fits with ``L_inf`` held at the known (test-split) Bayes loss, where known."""
    out = {}
    for model, rows in frame.groupby("model", sort=True):
        for task in tasks(frame):
            bayes = _bayes(frame, task)
            if bayes is None:
                continue
            y = pd.to_numeric(rows[f"test/{task}"], errors="coerce").to_numpy(float)
            law = fit_power_law(rows[X_COLUMN[axis]], y, n_boot, l_inf=bayes)
            out[(model, task, "test")] = law
    return out


def fit_table(
    frame: pd.DataFrame, fitted: Sequence[tuple], anchored: dict | None = None
) -> pd.DataFrame:
    """One row per fit: exponent and irreducible loss with intervals, R², the Bayes loss.

    With ``anchored`` (:func:`anchored_fits`), the exponent of the fit whose asymptote is held
    at the Bayes loss is beside the free one.
    """
    rows = []
    for model, task, split, law in fitted:
        row: dict[str, Any] = {"model": model, "task": task, "split": split}
        if law is None:
            rows.append({**row, "exponent b": "no fit (fewer than 4 sizes, or no convergence)"})
            continue
        rows.append({**row, **_fit_row(frame, task, split, law)})
        held = (anchored or {}).get((model, task, split))
        if held is not None:
            rows[-1]["b at L_inf = Bayes"] = _interval(held.b, held.b_low, held.b_high)
            rows[-1]["R² at Bayes"] = f"{held.r2:.3f}"
    return pd.DataFrame(rows).fillna("")


def _fit_row(frame: pd.DataFrame, task: str, split: str, law: PowerLaw) -> dict[str, Any]:
    bayes = _bayes(frame, task) if split == "test" else None  # the oracle scores the test split
    return {
        "exponent b": _interval(law.b, law.b_low, law.b_high),
        "a": f"{law.a:.4g}",
        "irreducible L_inf": _interval(law.l_inf, law.l_inf_low, law.l_inf_high),
        "Bayes loss": "" if bayes is None else f"{bayes:.5f}",
        "L_inf - Bayes": "" if bayes is None else f"{law.l_inf - bayes:+.5f}",
        "R²": f"{law.r2:.3f}",
        "points": law.n_points,
        "note": "exponent at a bound: not a power law" if law.at_bound else "",
    }


def _bayes(frame: pd.DataFrame, task: str) -> float | None:
    column = f"bayes/{task}"
    if column not in frame:
        return None
    values = pd.to_numeric(frame[column], errors="coerce").dropna()
    return float(values.mean()) if len(values) else None


def _as_dict(law: PowerLaw | None) -> dict[str, Any] | None:
    return None if law is None else law.to_dict()


def _interval(value: float, low: float, high: float) -> str:
    if math.isnan(low):
        return f"{value:.4f}"
    return f"{value:.4f} [{low:.4f}, {high:.4f}]"


def point_table(frame: pd.DataFrame, axis: str) -> pd.DataFrame:
    """Mean test and validation loss per (model, grid point) over seeds."""
    keys = ["model", "factor", "train_rows", "batch_size"]
    losses = [c for c in frame.columns if c.startswith(("test/", "valid/"))]
    sizes = ["n_params", "dense_params", "flops_per_sample", "compute"]
    agg = frame.groupby(keys, sort=True).agg(
        {**{c: "mean" for c in losses + sizes}, "seed": "count"}
    )
    agg = agg.rename(columns={"seed": "seeds"}).reset_index()
    return agg.sort_values(["model", X_COLUMN[axis]])


def frontier(frame: pd.DataFrame, fitted: Sequence[tuple], task: str) -> pd.DataFrame:
    """For each compute budget of the grid, the best (width, rows) point within it.

    Budgets are the computes of the grid points; the best point is the one of lowest mean
    test loss among those that cost no more; the fit's prediction at the budget is beside it.
    """
    laws = {(m, t, s): law for m, t, s, law in fitted}
    points = point_table(frame, "compute")
    rows = []
    for model, group in points.groupby("model", sort=True):
        law = laws.get((model, task, "test"))
        for budget in sorted(group["compute"].unique()):
            within = group[group["compute"] <= budget * (1 + 1e-9)]
            best = within.loc[within[f"test/{task}"].idxmin()]
            rows.append(
                {
                    "model": model,
                    "budget FLOPs": f"{budget:.3g}",
                    "best width factor": best["factor"],
                    "best dense params": int(best["dense_params"]),
                    "best train rows": int(best["train_rows"]),
                    f"test {task} loss": f"{best[f'test/{task}']:.5f}",
                    "fit at budget": "" if law is None else f"{float(law.predict(budget)):.5f}",
                }
            )
    return pd.DataFrame(rows)


def plot(
    frame: pd.DataFrame,
    fitted: Sequence[tuple],
    axis: str,
    task: str,
    title: str,
    path: Path,
    anchored: dict | None = None,
) -> Path:
    """Log-log test loss against the axis: seed means with std bars, fits, the Bayes loss.

    A fit with ``L_inf`` held at the Bayes loss (``anchored``) is drawn dotted.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    laws = {(m, t, s): law for m, t, s, law in fitted}
    xcol = X_COLUMN[axis]
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    for i, (model, rows) in enumerate(frame.groupby("model", sort=True)):
        color = f"C{i % 10}"
        stats = rows.groupby(xcol)[f"test/{task}"].agg(["mean", "std"]).reset_index()
        ax.errorbar(
            stats[xcol],
            stats["mean"],
            yerr=stats["std"].fillna(0),
            fmt="o",
            color=color,
            label=model,
            capsize=3,
        )
        law = laws.get((model, task, "test"))
        if law is not None:
            xs = np.geomspace(stats[xcol].min(), stats[xcol].max(), 100)
            ax.plot(
                xs,
                law.predict(xs),
                "-",
                color=color,
                label=f"{model}: b={law.b:.2f}, L_inf={law.l_inf:.4f}",
            )
        held = (anchored or {}).get((model, task, "test"))
        if held is not None:
            xs = np.geomspace(stats[xcol].min(), stats[xcol].max(), 100)
            ax.plot(
                xs, held.predict(xs), ":", color=color, label=f"{model}: b={held.b:.2f} at Bayes"
            )
    bayes = _bayes(frame, task)
    if bayes is not None:
        ax.axhline(
            bayes, color="k", linestyle="--", linewidth=1, label=f"Bayes (oracle) {bayes:.4f}"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(X_LABEL[axis])
    ax.set_ylabel(f"test log loss ({task})")
    ax.set_title(f"{title}\n{task}: L(x) = a·x^(-b) + L_inf", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    frame: pd.DataFrame,
    axis: str,
    report_dir: Path,
    header: dict[str, str],
    plots: bool = True,
    n_boot: int = BOOTSTRAP,
) -> Path:
    """Write ``scaling.md``, ``scaling.json`` and the plots to ``report_dir``."""
    report_dir.mkdir(parents=True, exist_ok=True)
    fitted = fits(frame, axis, n_boot)
    anchored = anchored_fits(frame, axis, n_boot)
    lines = [f"# Scaling study: {axis} axis", ""]
    lines += [f"- {k}: {v}" for k, v in header.items()]
    lines += [
        "",
        "## Fits: L(x) = a·x^(-b) + L_inf (95% residual-bootstrap intervals over points and seeds)",
        "",
        fit_table(frame, fitted, anchored).to_markdown(index=False),
        "",
    ]
    if axis == "compute":
        for task in tasks(frame):
            lines += [
                f"## Compute-optimal frontier ({task})",
                "",
                frontier(frame, fitted, task).to_markdown(index=False),
                "",
            ]
    lines += [
        "## Points (means over seeds)",
        "",
        point_table(frame, axis).to_markdown(index=False, floatfmt=".5g"),
        "",
    ]
    if plots:
        lines += ["## Plots", ""]
        for task in tasks(frame):
            name = f"scaling_{axis}_{task}.png"
            title = header.get("protocol", "")
            plot(frame, fitted, axis, task, title, report_dir / name, anchored)
            lines.append(f"![{task}]({name})")
    (report_dir / "scaling.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    payload = {
        "axis": axis,
        "header": header,
        "fits": [
            {
                "model": m,
                "task": t,
                "split": s,
                "fit": None if law is None else law.to_dict(),
                "fit_at_bayes": _as_dict(anchored.get((m, t, s))),
            }
            for m, t, s, law in fitted
        ],
        "points": json.loads(frame.to_json(orient="records")),
    }
    (report_dir / "scaling.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return report_dir / "scaling.md"
