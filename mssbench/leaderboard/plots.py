"""The plots of a page; each model keeps one colour and marker on every page."""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mssbench.leaderboard.frame import Page
from mssbench.leaderboard.text import _plot_text


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib is imported lazily
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_scenarios(page: Page, task: str, order: Sequence[str]):  # noqa: ANN201
    """Per-scenario AUC of each variant (mean ± std over seeds) for one task."""
    stats, ostats = page.cell_stats, page.oracle_stats
    scen = page.scenarios
    fig = _figure(max(6.0, 1.1 * len(scen) + 4.0), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(order))
    x = np.arange(len(scen), dtype=float)
    for k, v in enumerate(order):
        means = [stats.get((v, s, task, "auc"), (math.nan,) * 3)[0] for s in scen]
        stds = [stats.get((v, s, task, "auc"), (math.nan,) * 3)[1] for s in scen]
        stds = [0.0 if math.isnan(e) else e for e in stds]
        ax.errorbar(
            x - 0.4 + width * (k + 0.5),
            means,
            yerr=stds,
            fmt=_style_of(page, v)[1],
            capsize=3,
            markersize=5,
            color=_style_of(page, v)[0],
            label=_plot_text(v),
        )
    if ostats:
        means = [ostats.get(("oracle", s, task, "auc"), (math.nan,) * 3)[0] for s in scen]
        ax.scatter(x, means, marker="_", s=600, color="black", label="oracle")
    ax.set_xticks(x, [_plot_text(s, 16) for s in scen])
    ax.set_ylabel("test AUC (mean ± std over seeds)")
    ax.set_title(_title(page, f"{_plot_text(task)} AUC per scenario"))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


#: Markers of the model styles (with the 20 colours of ``tab20``: 200 distinct styles).
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")


def model_style(model: str) -> tuple[Any, str]:
    """``(colour, marker)`` of a model on every plot of every page, from its name alone."""
    from matplotlib import colormaps

    digest = int.from_bytes(hashlib.sha256(model.encode("utf-8")).digest()[:8], "big")
    cmap = colormaps["tab20"]
    return cmap(digest % cmap.N), _MARKERS[(digest // cmap.N) % len(_MARKERS)]


def _style_of(page: Page, variant: str) -> tuple[Any, str]:
    models = page.frame.loc[page.frame["variant"] == variant, "model"]
    return model_style(str(models.iloc[0]) if len(models) else variant)


def _title(page: Page, what: str) -> str:
    """A plot title: dataset, what is shown, and the protocol id (SYNTHETIC first if so)."""
    title = f"{_plot_text(page.dataset)}: {what}\n{_plot_text(page.protocol_id, 90)}"
    return ("SYNTHETIC — " if page.synthetic else "") + title


def _log_ticks(ax: Any, values: Sequence[float]) -> None:
    """Readable ticks on a log x axis, also when it spans less than a decade."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = ax.get_xlim()
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        for m in (1, 2, 5)
        if lo <= m * 10.0**e <= hi
    ]
    if len(ticks) < 3:  # a short axis: label the data's own values too
        ticks = sorted(set(ticks) | {float(f"{v:.2g}") for v in values if v > 0})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.3g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_cost(page: Page, table: pd.DataFrame):  # noqa: ANN201
    """Ranking score against training time per million samples and parameter count (log x)."""
    fig = _figure(12.0, 4.8)
    axes = fig.subplots(1, 2, sharey=True)
    frame = page.frame.drop_duplicates("run_hash")
    oracle = page.oracle
    oracle_score = math.nan
    if not oracle.empty:
        pooled = oracle[(oracle["scenario"] == "pooled") & (oracle["metric"] == "auc")]
        by_task = pooled.groupby("task")["value"].mean()
        if all(t in by_task for t in page.ranking_tasks):
            oracle_score = float(by_task[list(page.ranking_tasks)].mean())
    speed = frame["train_samples_per_s"].astype(float)
    frame = frame.assign(seconds_per_m=1e6 / speed.where(speed > 0))
    for ax, column, xlabel in (
        (axes[0], "seconds_per_m", "training seconds per million samples (log)"),
        (axes[1], "n_params", "parameters (log)"),
    ):
        xs = []
        for r in table.itertuples(index=False):
            x = float(frame.loc[frame["variant"] == r.variant, column].astype(float).mean())
            if math.isnan(r.mean) or not x > 0:
                continue
            xs.append(x)
            color, marker = _style_of(page, r.variant)
            err = 0.0 if math.isnan(r.std) else r.std
            label = _plot_text(r.variant) if ax is axes[1] else None
            ax.errorbar([x], [r.mean], yerr=[err], fmt=marker, capsize=3, color=color, label=label)
        if not math.isnan(oracle_score):
            label = "oracle" if ax is axes[1] else None
            ax.axhline(oracle_score, color="black", linestyle="--", linewidth=1, label=label)
        ax.set_xscale("log")
        ax.margins(x=0.2)
        if xs:
            _log_ticks(ax, xs)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ranking score (mean pooled AUC over tasks)")
    if axes[1].get_legend_handles_labels()[0]:
        axes[1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(_title(page, "AUC against training cost"))
    return fig


def plot_learning_curves(page: Page, curves: pd.DataFrame):  # noqa: ANN201
    """Validation selection score per epoch of each variant (mean ± std over runs)."""
    fig = _figure(8.0, 4.8)
    ax = fig.add_subplot()
    for v, g in curves.groupby("variant", sort=True):
        color, marker = _style_of(page, str(v))
        std = g["std"].fillna(0.0)
        ax.errorbar(
            g["epoch"],
            g["mean"],
            yerr=std,
            marker=marker,
            color=color,
            capsize=2,
            markersize=4,
            label=_plot_text(v),
        )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation selection score (mean AUC over tasks)")
    ax.set_title(_title(page, "learning curves"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig
