"""Figures of the calibration and the benchmark, sized for an A4 page (8.27 in wide), saved as PDF and PNG.

Each function takes the tidy tables of pertcal.stats and returns a matplotlib Figure; `save_figure` writes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from pertcal.gsea import GT_METHOD  # noqa: E402
from pertcal.io import atomic_path  # noqa: E402
from pertcal.stats import POSITIVE_CONTROLS, metric_direction, negative_control, order_methods  # noqa: E402

A4_WIDTH = 8.27
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 10,
    "pdf.fonttype": 42,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
CENSORED_COLOR = "#d9d9d9"
BETTER_COLOR = "#1b7837"
NEUTRAL_COLOR = "#555555"
DRF_CMAP = "RdBu"
SHORT_NAMES = {"technical_duplicate": "tech. dup.", "interpolated_duplicate": "interp. dup."}


def save_figure(fig: plt.Figure, pdf_path, png_path, dpi: int = 200) -> None:
    """Write `fig` as PDF and PNG atomically, without timestamps (same figure → same bytes), then close it."""
    # lay the figure out once; both files then reuse the positions instead of re-running the layout engine
    fig.canvas.draw()
    fig.set_layout_engine("none")
    with atomic_path(pdf_path) as tmp:
        fig.savefig(tmp, format="pdf", bbox_inches="tight", pad_inches=0.05, metadata={"CreationDate": None})
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.05, metadata={"Software": None})
    plt.close(fig)


def format_p(p: float) -> str:
    """'p=0.012', 'p=3e-05', 'p<1e-300' or 'p n/a'."""
    if not np.isfinite(p):
        return "p n/a"
    if p < 1e-300:
        return "p<1e-300"
    return f"p={p:.2g}" if p < 0.01 else f"p={p:.3f}"


def _no_data(ax) -> None:
    """Say in an empty panel why it is empty (e.g. DEG metrics on a dataset without perturbations of ≥ 3 DEGs)."""
    ax.text(0.5, 0.5, "no finite scores for this metric\n(DEG metrics need ≥ 3 DEGs per perturbation)",
            transform=ax.transAxes, ha="center", va="center", fontsize=7, color=NEUTRAL_COLOR)
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(width: float, height: float) -> plt.Figure:
    with plt.rc_context(STYLE):
        return plt.figure(figsize=(width, height), layout="constrained")


# --- calibration figures (issue 3) -----------------------------------------------------------------


def _drf_cells(ax, values: np.ndarray, censored: np.ndarray, norm, labels: np.ndarray | None = None, fontsize=6):
    """Draw a (metrics, datasets) grid of DRFs on `ax`: colour, censored cells hatched, each value (or its `labels`)."""
    im = ax.imshow(np.ma.masked_invalid(values), cmap=DRF_CMAP, norm=norm, aspect="auto")
    for i, j in zip(*np.nonzero(censored)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=CENSORED_COLOR, edgecolor="white", hatch="///", lw=0))
    for i, j in zip(*np.nonzero(~censored & np.isfinite(values))):
        v = values[i, j]
        text = f"{v:.2f}" if labels is None else labels[i, j]
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color="white" if abs(v) > 0.6 else "black")
    return im


def drf_heatmap(
    cells: pd.DataFrame,
    summary: pd.DataFrame,
    metrics: Sequence[str],
    *,
    positive_control: str,
    min_perturbations: int = 10,
) -> plt.Figure:
    """Metrics × datasets heatmap of mean DRF, censored cells hatched; bars: DRF and DEGs per dataset, DRF per metric.

    `cells`: pertcal.stats.summarize_drf output (dataset, metric, n, mean_drf, censored); `summary`: results/summary.csv
    (dataset, mean_degs). Datasets are ordered by mean DEGs per perturbation (weak → strong).
    """
    degs = summary.set_index("dataset")["mean_degs"]
    datasets = sorted(set(cells["dataset"]) | set(degs.index), key=lambda d: (degs.get(d, np.nan), d))
    grid = cells.set_index(["metric", "dataset"]).reindex(pd.MultiIndex.from_product([metrics, datasets]))
    values = grid["mean_drf"].to_numpy(dtype=float).reshape(len(metrics), len(datasets))
    censored = grid["censored"].fillna(True).to_numpy(dtype=bool).reshape(values.shape)
    with plt.rc_context(STYLE):
        width = float(np.clip(3.2 + 0.45 * len(datasets), 6.0, A4_WIDTH))
        fig = _figure(width, 2.4 + 0.3 * len(metrics))
        gs = fig.add_gridspec(3, 3, height_ratios=[1, 1, 0.3 * len(metrics)], width_ratios=[len(datasets) * 0.45, 1.1, 0.12])
        ax_drf = fig.add_subplot(gs[0, 0])
        ax_deg = fig.add_subplot(gs[1, 0], sharex=ax_drf)
        ax = fig.add_subplot(gs[2, 0], sharex=ax_drf)
        ax_metric = fig.add_subplot(gs[2, 1], sharey=ax)
        cax = fig.add_subplot(gs[2, 2])
        x = np.arange(len(datasets))
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
        im = _drf_cells(ax, values, censored, norm)
        ax.set_xticks(x, datasets, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(len(metrics)), metrics)
        ax.set_xlabel("dataset (ordered by mean DEGs per perturbation)")
        ax.set_ylabel("metric")
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("mean DRF (1 = positive control perfect,\n0 = no better than negative control)")

        per_dataset = np.array([np.nanmean(c) if np.isfinite(c).any() else np.nan for c in values.T])
        ax_drf.bar(x, np.nan_to_num(per_dataset), color=[plt.get_cmap(DRF_CMAP)(norm(v)) for v in np.nan_to_num(per_dataset)], edgecolor="black", lw=0.4)
        for j in np.nonzero(~np.isfinite(per_dataset))[0]:
            ax_drf.text(j, 0, "censored", rotation=90, ha="center", va="bottom", fontsize=6, color=NEUTRAL_COLOR)
        ax_drf.axhline(0, color="black", lw=0.5)
        ax_drf.set_ylabel("mean DRF\nper dataset")
        ax_drf.set_ylim(min(-0.05, np.nanmin(per_dataset, initial=0) * 1.15), max(0.05, np.nanmax(per_dataset, initial=0) * 1.15))
        ax_drf.tick_params(labelbottom=False)
        ax_deg.bar(x, degs.reindex(datasets).to_numpy(dtype=float), color=NEUTRAL_COLOR)
        ax_deg.set_yscale("symlog", linthresh=1)
        ax_deg.set_ylabel("mean DEGs per\nperturbation")
        ax_deg.tick_params(labelbottom=False)

        per_metric = np.array([np.nanmean(r) if np.isfinite(r).any() else np.nan for r in values])
        ax_metric.barh(np.arange(len(metrics)), np.nan_to_num(per_metric), color=[plt.get_cmap(DRF_CMAP)(norm(v)) for v in np.nan_to_num(per_metric)], edgecolor="black", lw=0.4)
        ax_metric.axvline(0, color="black", lw=0.5)
        ax_metric.set_xlabel("mean DRF\nper metric")
        ax_metric.tick_params(labelleft=False)
        ax_metric.set_xlim(min(-0.05, np.nanmin(per_metric, initial=0) * 1.15), max(0.05, np.nanmax(per_metric, initial=0) * 1.15))

        fig.legend(
            handles=[Patch(facecolor=CENSORED_COLOR, hatch="///", edgecolor="white", label=f"censored: fewer than {min_perturbations} perturbations with a DRF")],
            loc="outside lower center",
            frameon=False,
        )
        label = positive_control.replace("_", " ")
        fig.suptitle(f"Dynamic range fraction per metric and dataset\npositive control: {label}; higher is better")
    return fig


def drf_mse_vs_wmse(drf: pd.DataFrame, tests: pd.DataFrame, datasets: Sequence[str], *, positive_control: str) -> plt.Figure:
    """Box plots of per-perturbation DRF for MSE and WMSE per dataset, with the one-sided paired Wilcoxon p-values.

    `tests`: pertcal.stats.compare_drf_mse_wmse output; `datasets`: the x order.
    """
    sel = drf[(drf["positive_control"] == positive_control) & drf["metric"].isin(["mse", "wmse"])]
    colors = {"mse": "#9e9ac8", "wmse": "#e6550d"}
    tests = tests.set_index("dataset")
    with plt.rc_context(STYLE):
        fig = _figure(float(np.clip(2.0 + 0.6 * len(datasets), 5.5, A4_WIDTH)), 3.8)
        ax = fig.add_subplot()
        for j, dataset in enumerate(datasets):
            for k, metric in enumerate(("mse", "wmse")):
                v = sel.loc[(sel["dataset"] == dataset) & (sel["metric"] == metric), "drf"].dropna().to_numpy()
                if v.size:
                    ax.boxplot(
                        v, positions=[j + (k - 0.5) * 0.36], widths=0.3, patch_artist=True, showfliers=True,
                        flierprops=dict(markersize=2, alpha=0.5), medianprops=dict(color="black"),
                        boxprops=dict(facecolor=colors[metric]),
                    )
            if dataset in tests.index:
                row = tests.loc[dataset]
                text = f"n={row['n']}\n" + ("censored" if row["censored"] else format_p(row["p_bonferroni"]))
                ax.text(j, 1.08, text, ha="center", va="bottom", fontsize=6)
        ax.set_xticks(np.arange(len(datasets)), datasets, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(datasets) - 0.4)
        ax.set_ylim(-1.08, 1.32)
        ax.axhline(0, color="black", lw=0.5, ls=":")
        ax.set_ylabel("DRF per perturbation (higher is better)")
        ax.set_xlabel("dataset")
        fig.legend(
            handles=[Patch(facecolor=c, edgecolor="black", label=f"DRF of {m.upper()}") for m, c in colors.items()],
            loc="outside lower center", ncols=2, frameon=False,
        )
        fig.suptitle(
            f"DRF of MSE vs WMSE (positive control: {positive_control.replace('_', ' ')})\n"
            "p: one-sided paired Wilcoxon, DRF(WMSE) > DRF(MSE), Bonferroni over datasets"
        )
    return fig


def drf_vs_degs(drf: pd.DataFrame, n_degs: pd.DataFrame, *, positive_control: str) -> plt.Figure:
    """Per-perturbation DRF of MSE and WMSE against its number of DEGs, one colour per dataset.

    `n_degs`: dataset, perturbation, n_degs (gt half).
    """
    sel = drf[(drf["positive_control"] == positive_control) & drf["metric"].isin(["mse", "wmse"])]
    sel = sel.merge(n_degs, on=["dataset", "perturbation"], how="inner")
    datasets = sorted(sel["dataset"].unique())
    cmap = plt.get_cmap("tab20" if len(datasets) > 10 else "tab10")
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, 3.6)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, metric in zip(axes, ("mse", "wmse")):
            for i, dataset in enumerate(datasets):
                d = sel[(sel["metric"] == metric) & (sel["dataset"] == dataset)]
                ax.scatter(d["n_degs"], d["drf"], s=6, alpha=0.6, color=cmap(i % cmap.N), label=dataset, lw=0)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlim(left=-0.2)
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="black", lw=0.5, ls=":")
            ax.set_title(f"{metric.upper()}")
        fig.supxlabel("number of DEGs of the perturbation (ground-truth half; symlog scale)", fontsize=8)
        axes[0].set_ylabel("DRF per perturbation (higher is better)")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", frameon=False, title="dataset", markerscale=2)
        fig.suptitle(f"DRF vs number of DEGs per perturbation (positive control: {positive_control.replace('_', ' ')})")
    return fig


# --- benchmark figures (issue 6) -------------------------------------------------------------------


def _improvement(df: pd.DataFrame) -> pd.Series:
    """mu_delta signed so that positive means better than the reference."""
    return df["mu_delta"].where(df["higher_is_better"], -df["mu_delta"])


def forest_plot(stats: pd.DataFrame, specs: Mapping, title: str, alpha: float = 0.05, confidence: float = 0.95) -> plt.Figure:
    """One panel per metric: each method's mean difference to the reference with its bootstrap CI, ordered by effect.

    `stats`: pertcal.stats.compare_methods rows of one (dataset, task, comparison). Right of each row: paired t and its
    Bonferroni-adjusted one-sided p. Green: significantly better than the reference (adjusted p < alpha).
    """
    metrics = [m for m in specs if m in set(stats["metric"])]
    stats = stats[np.isfinite(stats["mu_delta"])]
    n_rows_max = max(1, stats.groupby("metric").size().max() if len(stats) else 1)
    ncols = 2
    nrows = int(np.ceil(len(metrics) / ncols))
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, 0.6 + nrows * (0.5 + 0.13 * n_rows_max))
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, metrics):
            d = stats[stats["metric"] == metric].assign(better=lambda x: _improvement(x)).sort_values("better", kind="stable")
            spec = specs[metric]
            ax.set_title(f"{metric} ({metric_direction(spec)})", loc="left")
            if d.empty:
                _no_data(ax)
                continue
            y = np.arange(len(d))
            sig = (d["p_t_bonferroni"] < alpha).to_numpy()
            colors = np.where(sig, BETTER_COLOR, NEUTRAL_COLOR)
            err = np.vstack([d["mu_delta"] - d["ci_low"], d["ci_high"] - d["mu_delta"]]).clip(min=0)
            positive = d["method"].isin(POSITIVE_CONTROLS).to_numpy()
            for yi, xi, e, c, pos in zip(y, d["mu_delta"], np.nan_to_num(err).T, colors, positive):
                ax.errorbar(
                    xi, yi, xerr=e[:, None], fmt="D" if pos else "o", color=c, mfc="white" if pos else c,
                    ms=3.5, elinewidth=1, capsize=1.5,
                )
            ax.axvline(0, color="black", lw=0.6, ls="--")
            ax.set_yticks(y, d["method"])
            ax.set_ylim(-0.6, max(len(d), 1) - 0.4)
            trans = blended_transform_factory(ax.transAxes, ax.transData)
            for yi, t, p in zip(y, d["t"], d["p_t_bonferroni"]):
                ax.text(1.02, yi, f"t={t:.1f}  {format_p(p)}" if np.isfinite(t) else "t n/a", transform=trans, va="center", fontsize=6)
            reference = d["reference"].iloc[0]
            ax.set_xlabel(f"µΔ = method − {reference} ({confidence:.0%} CI); {'right' if spec.higher_is_better else 'left'} = better")
        for ax in axes[len(metrics):]:
            ax.set_axis_off()
        fig.legend(
            handles=[
                plt.Line2D([], [], marker="o", color=BETTER_COLOR, ls="none", label=f"better than reference (Bonferroni p < {alpha})"),
                plt.Line2D([], [], marker="o", color=NEUTRAL_COLOR, ls="none", label="not significantly better"),
                plt.Line2D([], [], marker="D", color=NEUTRAL_COLOR, mfc="white", ls="none", label="positive control (duplicate)"),
            ],
            loc="outside lower center", ncols=3, frameon=False,
        )
        fig.suptitle(title + "\nt: one-sided paired t-test per perturbation; p: Bonferroni-adjusted over the compared methods")
    return fig


def ideal_gap_heatmap(gap: pd.DataFrame, specs: Mapping, title: str) -> plt.Figure:
    """Methods × metrics heatmap of the fraction of the ideal gap closed (0 = negative control, 1 = perfect).

    `gap`: pertcal.stats.ideal_gap_closed rows of one (dataset, task). Colours clip at ±1; labels show the value.
    """
    metrics = [m for m in specs if m in set(gap["metric"])]
    methods = order_methods(gap["method"].unique())
    values = gap.pivot(index="method", columns="metric", values="gap").reindex(index=methods, columns=metrics).to_numpy(dtype=float)
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, max(4.2, 2.2 + 0.28 * len(methods)))
        ax = fig.add_subplot()
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
        im = ax.imshow(np.ma.masked_invalid(np.clip(values, -1, 1)), cmap="PuOr_r", norm=norm, aspect="auto")
        ax.set_facecolor(CENSORED_COLOR)
        for i, j in np.ndindex(values.shape):
            v = values[i, j]
            ax.text(j, i, f"{round(v, 2) + 0.0:.2f}" if np.isfinite(v) else "n/a", ha="center", va="center", fontsize=6,
                    color="white" if np.isfinite(v) and abs(v) > 0.65 else "black")
        labels = [f"{m} (vs {negative_control(specs[m])})" for m in metrics]
        ax.set_xticks(np.arange(len(metrics)), labels, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(len(methods)), methods)
        ax.set_xlabel("metric (negative control)")
        ax.set_ylabel("method")
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        cb.set_label("fraction of ideal gap closed\n(0 = negative control, 1 = perfect)")
        fig.suptitle(title + " (higher is better)")
    return fig


def _clip_outliers(ax, values: np.ndarray) -> None:
    """Limit the y axis to the 1st–99th percentile (padded) when outliers would squash the rest, and say so."""
    if values.size < 20:
        return
    lo, hi = np.percentile(values, [1, 99])
    full = values.max() - values.min()
    if full > 3 * (hi - lo) > 0:
        pad = 0.1 * (hi - lo)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("y axis: 1st–99th percentile (outliers cut)", fontsize=6)


def control_strips(metrics: pd.DataFrame, tests: pd.DataFrame, specs: Mapping, title: str) -> plt.Figure:
    """Per metric: per-perturbation scores of the negative control and the two duplicates, their means and p-values.

    `metrics`: long metric rows of one (dataset, task); `tests`: pertcal.stats.compare_controls rows of the same.
    Tick labels carry each duplicate's one-sided Wilcoxon p vs the negative control; titles the interpolated vs
    technical duplicate p.
    """
    names = [m for m in specs if m in set(metrics["metric"])]
    ncols = 3
    nrows = int(np.ceil(len(names) / ncols))
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, 0.7 + 2.15 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, metric in zip(axes, names):
            spec = specs[metric]
            neg = negative_control(spec)
            methods = [neg, "technical_duplicate", "interpolated_duplicate"]
            t = tests[tests["metric"] == metric].set_index(["method", "reference"])["p_wilcoxon"]
            labels, shown = [], []
            for j, method in enumerate(methods):
                v = metrics.loc[(metrics["metric"] == metric) & (metrics["method"] == method), "value"].dropna().to_numpy()
                ax.scatter(j + rng.uniform(-0.25, 0.25, v.size), v, s=3, alpha=0.45, color=NEUTRAL_COLOR if j == 0 else BETTER_COLOR, lw=0)
                if v.size:
                    ax.hlines(v.mean(), j - 0.32, j + 0.32, color="black", lw=1.5)
                shown.append(v)
                p = t.get((method, neg), np.nan) if j else np.nan
                labels.append(SHORT_NAMES.get(method, method) + ("" if j == 0 else f"\n{format_p(p)}"))
            ax.set_xticks(np.arange(3), labels, fontsize=6.5)
            ax.set_xlim(-0.5, 2.5)
            p_id_td = t.get(("interpolated_duplicate", "technical_duplicate"), np.nan)
            ax.set_title(f"{metric} ({metric_direction(spec)})\ninterp. dup. better than tech. dup.: {format_p(p_id_td)}", fontsize=7)
            if not any(v.size for v in shown):
                _no_data(ax)
                continue
            _clip_outliers(ax, np.concatenate(shown))
        for ax in axes[::ncols]:
            ax.set_ylabel("score per perturbation")
        for ax in axes[len(names):]:
            ax.set_axis_off()
        fig.suptitle(
            title + "\nblack lines: means; p under a duplicate: one-sided paired Wilcoxon test that it beats the negative control"
        )
    return fig


# --- calibration of every metric (issue 12) --------------------------------------------------------------------


def _metric_label(metric: str, identical_to) -> str:
    """The metric's name, with "≡ other" when its DRF repeats another metric's by algebra."""
    return f"{metric} ≡ {identical_to}" if isinstance(identical_to, str) and identical_to else metric


def panel_drf_heatmap(
    cells: pd.DataFrame, summary: pd.DataFrame, *, positive_control: str, negative_control: str,
    min_perturbations: int = 10, confidence: float = 0.95,
) -> plt.Figure:
    """Metrics × datasets mean DRF with its bootstrap CI, one heatmap per metric panel, censored cells hatched.

    `cells`: pertcal.calibration.summarize_drf_ci rows (panel, metric, dataset, mean_drf, ci_low, ci_high, censored,
    drf_identical_to), rows in registry order; `summary`: results/summary.csv (datasets ordered by mean DEGs).
    """
    cells = cells[(cells["positive_control"] == positive_control) & (cells["negative_control"] == negative_control)]
    degs = summary.set_index("dataset")["mean_degs"]
    datasets = sorted(set(cells["dataset"]), key=lambda d: (degs.get(d, np.nan), d))
    panels = list(dict.fromkeys(cells["panel"]))
    metrics = {p: list(dict.fromkeys(cells.loc[cells["panel"] == p, "metric"])) for p in panels}
    identical = cells.drop_duplicates("metric").set_index("metric")["drf_identical_to"]
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
    with plt.rc_context(STYLE):
        width = float(np.clip(2.6 + 0.75 * len(datasets), 5.0, A4_WIDTH))
        n_rows = sum(len(m) for m in metrics.values())
        fig = _figure(width, 1.3 + 0.36 * n_rows + 0.35 * len(panels))
        gs = fig.add_gridspec(len(panels), 2, height_ratios=[len(metrics[p]) for p in panels], width_ratios=[1, 0.03])
        im = None
        for k, panel in enumerate(panels):
            ax = fig.add_subplot(gs[k, 0])
            grid = cells[cells["panel"] == panel].set_index(["metric", "dataset"]).reindex(
                pd.MultiIndex.from_product([metrics[panel], datasets])
            )
            shape = (len(metrics[panel]), len(datasets))
            values = grid["mean_drf"].to_numpy(dtype=float).reshape(shape)
            censored = grid["censored"].fillna(True).to_numpy(dtype=bool).reshape(shape)
            lo, hi = (grid[c].to_numpy(dtype=float).reshape(shape) for c in ("ci_low", "ci_high"))
            labels = np.array([[f"{v:.2f}\n[{a:.2f}, {b:.2f}]" for v, a, b in zip(*r)] for r in zip(values, lo, hi)])
            im = _drf_cells(ax, values, censored, norm, labels.reshape(shape), fontsize=5)
            ax.set_yticks(np.arange(shape[0]), [_metric_label(m, identical.get(m)) for m in metrics[panel]])
            ax.set_title(f"panel: {panel}")
            last = k == len(panels) - 1
            ax.set_xticks(np.arange(len(datasets)), datasets if last else [], rotation=30, ha="right", rotation_mode="anchor")
            if last:
                ax.set_xlabel("dataset (ordered by mean DEGs per perturbation)")
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
        cb = fig.colorbar(im, cax=fig.add_subplot(gs[:, 1]))
        cb.set_label("mean DRF (1 = positive control perfect, 0 = no better than negative control)")
        fig.legend(
            handles=[Patch(facecolor=CENSORED_COLOR, hatch="///", edgecolor="white",
                           label=f"censored: fewer than {min_perturbations} perturbations with a DRF")],
            loc="outside lower center", frameon=False,
        )
        fig.suptitle(
            f"DRF of every metric: mean [{confidence:.0%} bootstrap CI over perturbations]\n"
            f"positive control: {positive_control.replace('_', ' ')}; negative control: {negative_control} "
            "(control for Δpert metrics)\n≡: same DRF by algebra (count once)"
        )
    return fig


def drf_negative_controls(cells: pd.DataFrame, *, positive_control: str, confidence: float = 0.95) -> plt.Figure:
    """Mean DRF with its CI per metric under each negative-control option, one panel per dataset.

    `cells`: pertcal.calibration.summarize_drf_ci rows; options are the values of its `negative_control` column.
    """
    cells = cells[cells["positive_control"] == positive_control]
    datasets = sorted(cells["dataset"].unique())
    options = list(dict.fromkeys(cells["negative_control"]))
    metrics = list(dict.fromkeys(cells["metric"]))
    colors = dict(zip(options, ["#2166ac", "#d6604d", "#4d9221", "#8073ac"]))
    ncols = min(4, len(datasets))
    nrows = int(np.ceil(len(datasets) / ncols))
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, 0.9 + nrows * (0.6 + 0.16 * len(metrics)))
        axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=True).ravel()
        y = np.arange(len(metrics))
        for ax, dataset in zip(axes, datasets):
            for k, option in enumerate(options):
                d = cells[(cells["dataset"] == dataset) & (cells["negative_control"] == option)].set_index("metric").reindex(metrics)
                offset = (k - (len(options) - 1) / 2) * 0.25
                mean, lo, hi = (d[c].to_numpy(dtype=float) for c in ("mean_drf", "ci_low", "ci_high"))
                ax.errorbar(mean, y + offset, xerr=[mean - lo, hi - mean], fmt="o", ms=2.5, lw=0.8, color=colors[option],
                            label=option)
                censored = d["censored"].fillna(True).to_numpy(dtype=bool)
                ax.scatter(mean[censored], y[censored] + offset, s=12, facecolor="white", edgecolor=colors[option], zorder=3)
            ax.axvline(0, color="black", lw=0.5, ls=":")
            ax.set_title(dataset)
            ax.set_yticks(y, metrics)
            ax.invert_yaxis() if ax is axes[0] else None
            ax.set_xlim(-1.05, 1.05)
        for k, ax in enumerate(axes):
            if k >= len(datasets):
                ax.set_visible(False)
            elif k + ncols >= len(datasets):  # the lowest panel of its column
                ax.set_xlabel(f"mean DRF [{confidence:.0%} CI]")
                ax.tick_params(labelbottom=True)
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=len(options), frameon=False,
                   title="negative control (open marker: censored)")
        fig.suptitle(f"DRF under each negative control (positive control: {positive_control.replace('_', ' ')}; "
                     "Δpert metrics keep the control baseline)")
    return fig


def gameability_heatmap(gaming: pd.DataFrame) -> plt.Figure:
    """Metrics × gaming predictors: median over datasets of the gap each closes from the negative to the positive
    control (0 = negative, 1 = positive control); text: datasets where it beats the negative control / all, and
    "+" when it beats the positive control on any dataset."""
    metrics = list(dict.fromkeys(gaming["metric"]))
    predictors = list(dict.fromkeys(gaming["predictor"]))
    g = gaming.groupby(["metric", "predictor"], sort=False)
    median = g["gap_closed"].median().unstack().reindex(index=metrics, columns=predictors)
    beats = g["beats_negative"].sum().unstack().reindex(index=metrics, columns=predictors)
    above = g["beats_positive"].any().unstack().reindex(index=metrics, columns=predictors)
    total = g.size().unstack().reindex(index=metrics, columns=predictors)
    values = median.to_numpy(dtype=float)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-1.0, vmax=1.0)
    with plt.rc_context(STYLE):
        fig = _figure(float(np.clip(3.0 + 0.8 * len(predictors), 5.5, A4_WIDTH)), 1.6 + 0.3 * len(metrics))
        ax = fig.add_subplot()
        im = ax.imshow(np.ma.masked_invalid(np.clip(values, -1, 1)), cmap="PuOr_r", norm=norm, aspect="auto")
        for i, j in np.ndindex(values.shape):
            if np.isfinite(values[i, j]):
                text = f"{values[i, j]:.2f}\n{int(beats.iat[i, j])}/{int(total.iat[i, j])}" + (" +" if above.iat[i, j] else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=5.5,
                        color="white" if abs(values[i, j]) > 0.6 else "black")
        ax.set_xticks(np.arange(len(predictors)), predictors, rotation=30, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(len(metrics)), metrics)
        for side in ("top", "right"):
            ax.spines[side].set_visible(True)
        cb = fig.colorbar(im, ax=ax, shrink=0.8)
        cb.set_label("median gap closed (0 = negative control,\n1 = positive control; clipped to [−1, 1])")
        ax.set_xlabel("gaming predictor")
        fig.suptitle("Gaming predictors: how far toward the positive control each gets\n"
                     "k/n: datasets where it beats the negative control (one-sided Wilcoxon, Bonferroni); "
                     "+: beats the positive control somewhere")
    return fig


def deg_sensitivity_plot(drf: pd.DataFrame, degs: pd.DataFrame, *, positive_control: str) -> plt.Figure:
    """Left: mean DRF per metric under each DEG test variant, one line per dataset; right: DEGs called per
    perturbation and (simulated datasets) their precision against the simulator's truth."""
    drf = drf[drf["positive_control"] == positive_control].assign(
        variant=lambda t: t["deg_test"] + " " + t["deg_alpha"].map("{:g}".format)
    )
    degs = degs.assign(variant=degs["deg_test"] + " " + degs["deg_alpha"].map("{:g}".format))
    variants = list(dict.fromkeys(drf["variant"]))
    metrics = list(dict.fromkeys(drf["metric"]))
    datasets = sorted(drf["dataset"].unique())
    cmap = plt.get_cmap("tab10")
    markers = ["o", "s", "^", "D", "v", "P"]
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, 1.6 + 0.24 * len(metrics))
        ax, ax_n, ax_p = fig.subplots(1, 3, width_ratios=[2.2, 1, 1])
        y = np.arange(len(metrics))
        for k, variant in enumerate(variants):
            for i, dataset in enumerate(datasets):
                d = drf[(drf["variant"] == variant) & (drf["dataset"] == dataset)].set_index("metric").reindex(metrics)
                ax.scatter(d["mean_drf"], y + (k - (len(variants) - 1) / 2) * 0.15, s=8, color=cmap(i % 10),
                           marker=markers[k % len(markers)])
        ax.set_yticks(y, metrics)
        ax.invert_yaxis()
        ax.axvline(0, color="black", lw=0.5, ls=":")
        ax.set_xlabel("mean DRF")
        tests = [plt.Line2D([], [], ls="", marker=markers[k % len(markers)], color=NEUTRAL_COLOR, label=v)
                 for k, v in enumerate(variants)]
        x = np.arange(len(variants))
        for i, dataset in enumerate(datasets):
            d = degs[degs["dataset"] == dataset].set_index("variant").reindex(variants)
            ax_n.plot(x, d["mean_degs"], marker="o", ms=3, color=cmap(i % 10), label=dataset)
            if "precision" in d and d["precision"].notna().any():
                ax_p.plot(x, d["precision"], marker="o", ms=3, color=cmap(i % 10))
        ax_n.set_yscale("symlog", linthresh=1)
        ax_n.set_ylabel("DEGs per perturbation (gt half)")
        ax_p.set_ylabel("precision vs simulator truth")
        ax_p.set_ylim(-0.02, 1.02)
        for a in (ax_n, ax_p):
            a.set_xticks(x, variants, rotation=30, ha="right", rotation_mode="anchor")
        handles = tests + ax_n.get_legend_handles_labels()[0]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), frameon=False,
                   title="marker: DEG test and BH threshold; colour: dataset")
        fig.suptitle(f"Sensitivity of the calibration to the DEG test (positive control: {positive_control.replace('_', ' ')})")
    return fig


# --- GSEA self-enrichment (issue 10) ---------------------------------------------------------------


def gsea_nes(table: pd.DataFrame, *, alpha: float) -> plt.Figure:
    """Per dataset: the NES of each tested regulator's own target set, per ranking (gt-half t, then each method's
    predicted Δ against control); filled where FDR < `alpha`. `table`: pertcal.gsea tables with a dataset column."""
    tested = table[table["nes"].notna()]
    datasets = list(dict.fromkeys(table["dataset"]))
    ncols = 1 if len(datasets) < 3 else 2
    nrows = max(1, int(np.ceil(len(datasets) / ncols)))
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    with plt.rc_context(STYLE):
        fig = _figure(A4_WIDTH, 0.9 + 2.3 * nrows)
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
        for ax, dataset in zip(axes, datasets):
            d = tested[tested["dataset"] == dataset]
            methods = [GT_METHOD, *order_methods(set(table.loc[table["dataset"] == dataset, "method"]) - {GT_METHOD})]
            for j, method in enumerate(methods):
                m = d[d["method"] == method]
                color = NEUTRAL_COLOR if method == GT_METHOD else BETTER_COLOR
                x = j + rng.uniform(-0.25, 0.25, len(m))
                significant = (m["fdr"] < alpha).to_numpy()
                ax.scatter(x[significant], m["nes"].to_numpy()[significant], s=7, color=color, lw=0, alpha=0.8)
                ax.scatter(x[~significant], m["nes"].to_numpy()[~significant], s=7, facecolor="none", edgecolor=color,
                           lw=0.5, alpha=0.8)
                if len(m):
                    ax.hlines(m["nes"].median(), j - 0.32, j + 0.32, color="black", lw=1.5)
            ax.axhline(0, color="black", lw=0.5, ls=":")
            ax.set_xticks(np.arange(len(methods)), [SHORT_NAMES.get(m, m).replace("_", " ") for m in methods],
                          rotation=40, ha="right", fontsize=6.5)
            ax.set_xlim(-0.6, len(methods) - 0.4)
            n = d.loc[d["method"] == GT_METHOD, ["perturbation", "gene_set"]].drop_duplicates().shape[0]
            ax.set_title(f"{dataset} ({n} regulator sets tested on the gt half)")
            if d.empty:
                ax.text(0.5, 0.5, "no perturbed regulator has a target set\nof the minimum size",
                        transform=ax.transAxes, ha="center", va="center", fontsize=7, color=NEUTRAL_COLOR)
        for ax in axes[::ncols]:
            ax.set_ylabel("NES of own target set")
        for ax in axes[len(datasets):]:
            ax.set_axis_off()
        fig.suptitle(
            "GSEA self-enrichment: is a perturbed regulator's own target set enriched in the ranking?\n"
            f"gt half = observed t statistic; others = predicted Δ vs control; filled: FDR < {alpha:g}; "
            "black lines: medians"
        )
    return fig
