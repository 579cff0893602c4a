"""Figures of the dataset-quality and perturbation-strength analyses (pertcal.quality, pertcal.strength), in the style
of pertcal.plots."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

from pertcal.plots import A4_WIDTH, BETTER_COLOR, NEUTRAL_COLOR, STYLE, format_p
from pertcal.quality import QUALITY_MEASURES

MEAN_COLOR = "#b2182b"
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "8", "d"]


def drf_vs_quality(points: pd.DataFrame, rho: pd.DataFrame, *, positive_control: str) -> plt.Figure:
    """One panel per quality measure: mean DRF of every (dataset, metric) cell against the dataset's measure
    (colour = metric, marker = dataset), with Spearman's rho over all cells (pertcal.quality.drf_vs_quality outputs)."""
    measures = list(QUALITY_MEASURES)
    metrics = sorted(points["metric"].unique())
    datasets = sorted(points["dataset"].unique())
    cmap = plt.get_cmap("tab20")
    marker = {d: MARKERS[i % len(MARKERS)] for i, d in enumerate(datasets)}
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(A4_WIDTH, 5.6), layout="constrained")
        axes = fig.subplots(2, 2, sharey=True).ravel()
        r = rho.set_index(["measure", "metric"])
        for ax, measure in zip(axes, measures):
            sel = points[points["measure"] == measure]
            for i, metric in enumerate(metrics):
                for dataset, d in sel[sel["metric"] == metric].groupby("dataset"):
                    ax.scatter(d["value"], d["mean_drf"], s=14, color=cmap(i % cmap.N), marker=marker[dataset], lw=0,
                               alpha=0.85)
            values = sel["value"].to_numpy()
            if values.size and values.min() > 0 and values.max() > 20 * values.min():
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
                ax.xaxis.set_major_formatter(ScalarFormatter())
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.axhline(0, color="black", lw=0.5, ls=":")
            ax.set_ylim(-1.05, 1.05)
            ax.set_xlabel(QUALITY_MEASURES[measure])
            key = (measure, "all")
            stat = f"ρ = {r.loc[key, 'rho']:.2f}, {format_p(r.loc[key, 'p'])}, n = {r.loc[key, 'n']}" if key in r.index else "no data"
            ax.set_title(f"Spearman {stat}", fontsize=7)
        for ax in axes[::2]:
            ax.set_ylabel("mean DRF per dataset × metric")
        handles = [plt.Line2D([], [], ls="none", marker="o", color=cmap(i % cmap.N), label=m) for i, m in enumerate(metrics)]
        handles += [plt.Line2D([], [], ls="none", marker=marker[d], color=NEUTRAL_COLOR, label=d) for d in datasets]
        fig.legend(handles=handles, loc="outside right center", frameon=False, title="metric (colour)\ndataset (marker)",
                   fontsize=6)
        fig.suptitle(f"DRF vs dataset quality (positive control: {positive_control.replace('_', ' ')}; "
                     "censored cells left out)")
    return fig


def _panel_grid(n: int, ncols: int, height: float):
    nrows = int(np.ceil(n / ncols))
    fig = plt.figure(figsize=(A4_WIDTH, 0.8 + height * nrows), layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def gene_errors(table: pd.DataFrame) -> plt.Figure:
    """Per (dataset, task): MSE per (perturbation, gene) of the mean baseline and of the technical duplicate against
    the gt half, by the gene's gt-half adjusted p; shaded where the mean baseline is the better estimate."""
    keys = table[["dataset", "task"]].drop_duplicates().sort_values(["dataset", "task"]).to_numpy()
    with plt.rc_context(STYLE):
        fig, axes = _panel_grid(len(keys), 2, 2.3)
        for ax, (dataset, task) in zip(axes, keys):
            d = table[(table["dataset"] == dataset) & (table["task"] == task) & (table["n"] > 0)]
            bins = d.drop_duplicates("p_low").sort_values("p_low")
            x = {p: i for i, p in enumerate(bins["p_low"])}
            wide = d.pivot(index="p_low", columns="method", values="mse").sort_index()
            for i, (p, row) in enumerate(wide.iterrows()):
                if row["mean"] < row["technical_duplicate"]:
                    ax.axvspan(i - 0.5, i + 0.5, color=MEAN_COLOR, alpha=0.12, lw=0)
            for method, color, marker in (("mean", MEAN_COLOR, "o"), ("technical_duplicate", BETTER_COLOR, "s")):
                m = d[d["method"] == method].sort_values("p_low")
                ax.plot([x[p] for p in m["p_low"]], m["mse"], marker=marker, ms=3, color=color,
                        label=method.replace("_", " ") + (" baseline" if method == "mean" else ""))
            ax.set_yscale("log")
            ax.set_xticks(range(len(bins)), [f"{lbl}\nn={n:,}" for lbl, n in zip(bins["p_bin"], bins["n"])], fontsize=5.5)
            ax.set_xlim(-0.5, len(bins) - 0.5)
            ax.set_title(f"{dataset} ({task})")
            ax.set_ylabel("MSE vs gt half")
            ax.set_xlabel("gene's adjusted p, gt-half DEG test (n = perturbation × gene values)", fontsize=6.5)
        for ax in axes[len(keys):]:
            ax.set_axis_off()
        handles, labels = axes[0].get_legend_handles_labels()
        handles.append(plt.Rectangle((0, 0), 1, 1, color=MEAN_COLOR, alpha=0.12))
        labels.append("mean baseline closer on average")
        fig.legend(handles, labels, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle("Per-gene error of the mean baseline and the technical duplicate by DEG significance")
    return fig


def titration(table: pd.DataFrame, strata: list[str]) -> plt.Figure:
    """Rows = datasets, columns = DEG-count strata: the td-half subsample's MSE against its number of cells (mean
    over perturbations; band: range of the repeats' means), with the mean baseline and the whole technical duplicate
    as references over the same perturbations."""
    datasets = sorted(table["dataset"].unique())
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(A4_WIDTH, 0.9 + 1.9 * len(datasets)), layout="constrained")
        axes = fig.subplots(len(datasets), len(strata), squeeze=False)
        for i, dataset in enumerate(datasets):
            for j, stratum in enumerate(strata):
                ax = axes[i, j]
                d = table[(table["dataset"] == dataset) & (table["stratum"] == stratum)]
                ax.set_title(f"{dataset}: {stratum} DEGs (n={d['perturbation'].nunique()})", fontsize=7)
                if d.empty:
                    ax.text(0.5, 0.5, "no perturbations", transform=ax.transAxes, ha="center", va="center",
                            fontsize=7, color=NEUTRAL_COLOR)
                    ax.set_xticks([])
                    ax.set_yticks([])
                    continue
                per_repeat = d.groupby(["size", "repeat"])["mse"].mean().unstack()
                sizes = per_repeat.index.to_numpy()
                curve = d.groupby("size")[["mse", "mse_mean", "mse_technical_duplicate"]].mean()
                ax.fill_between(sizes, per_repeat.min(axis=1), per_repeat.max(axis=1), color=BETTER_COLOR, alpha=0.2, lw=0)
                ax.plot(sizes, curve["mse"], marker="o", ms=3, color=BETTER_COLOR, label="td-half subsample")
                ax.plot(sizes, curve["mse_mean"], ls="--", color=MEAN_COLOR, label="mean baseline")
                ax.plot(sizes, curve["mse_technical_duplicate"], ls=":", color=NEUTRAL_COLOR,
                        label="technical duplicate (all td cells)")
                ax.set_xscale("log", base=2)
                ax.set_xticks(sizes, [str(s) for s in sizes])
                ax.xaxis.set_minor_locator(NullLocator())
                ax.set_yscale("log")
            axes[i, 0].set_ylabel("MSE vs gt half")
        for ax in axes[-1]:
            ax.set_xlabel("cells in the subsample")
        handles = [plt.Line2D([], [], marker="o", color=BETTER_COLOR, label="td-half subsample (band: repeats)"),
                   plt.Line2D([], [], ls="--", color=MEAN_COLOR, label="mean baseline"),
                   plt.Line2D([], [], ls=":", color=NEUTRAL_COLOR, label="technical duplicate (all td cells)")]
        fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
        fig.suptitle("Cell titration: technical duplicate from fewer cells vs the mean baseline, by DEG count (gt half)")
    return fig
