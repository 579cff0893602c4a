"""Calibration of every metric: DRF with bootstrap CIs, BDS with a permutation p, calibrated scores, gaming predictors.

Every function takes tidy tables (docs/architecture.md) and a metric spec table (pertcal.metrics.metric_specs():
metric, panel, higher_is_better, perfect, negative_control, drf_identical_to), so a metric added to the registry is
calibrated without code here. The calibration controls (`mean_loo`, the gaming predictors) are predicted and scored
next to the fold's controls but never enter the benchmark's model statistics.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from pertcal.baselines import GAMING_PREDICTORS, as_prediction, fold_data, predict_baseline
from pertcal.degs import test_degs
from pertcal.drf import POSITIVE_CONTROLS, compute_drf
from pertcal.evaluate import GeneSpaces, score_fold
from pertcal.stats import bonferroni, comparison_rng, wilcoxon_test
from pertcal.summary import deg_recovery, n_degs

METRICS_COLUMNS = ["dataset", "task", "fold", "method", "perturbation", "metric", "value"]
# Scored under every DEG test: the methods the DRF needs.
CONTROL_METHODS = ("control", "mean", "technical_duplicate", "interpolated_duplicate")
# Bootstrap resamples drawn at once (a (batch, P) matrix of counts).
_BATCH = 1000


# --- the calibration controls' scores --------------------------------------------------------------------------


def score_calibration_controls(
    stats: ad.AnnData, folds: dict[str, pd.DataFrame], degs_gt: ad.AnnData, *, methods, dataset: str, seed: int,
    deg_alpha: float, panels=("paper",), spaces: GeneSpaces | None = None,
) -> pd.DataFrame:
    """Metric values (METRICS_COLUMNS) of the metric `panels` for the calibration controls `methods` on every fold.

    `stats`: the dataset's stats.h5ad (`sum`); `folds`: task → folds table; `degs_gt`: gt DEG matrices; `spaces`:
    the gene_spaces panel's control HVGs and PC loadings (pertcal.evaluate.score_fold). Random
    predictors draw from a generator seeded by (seed, dataset, task, fold, method): same seed, same table.
    """
    parts = []
    for task, table in folds.items():
        for fold in sorted(table["fold"].unique()):
            d = fold_data(stats, table, int(fold), degs_td=None, modality="")
            for method in methods:
                pred = predict_baseline(method, d, seed=comparison_rng(seed, dataset, task, str(fold), method))
                prediction = as_prediction(pred, method=method, dataset=dataset, task=task, fold=int(fold))
                scores = score_fold(prediction, stats, table, int(fold), degs_gt, deg_alpha=deg_alpha, panels=panels,
                                    spaces=spaces, source=method)
                parts.append(scores.assign(dataset=dataset, task=task, fold=np.int64(fold), method=method))
    return pd.concat(parts, ignore_index=True)[METRICS_COLUMNS] if parts else pd.DataFrame(columns=METRICS_COLUMNS)


# --- DRF under each negative control, with bootstrap CIs -------------------------------------------------------


def calibration_drf(metrics: pd.DataFrame, specs: pd.DataFrame, negative_controls=("mean",)) -> pd.DataFrame:
    """Per-perturbation DRF (pertcal.drf.compute_drf) under each negative-control option, column `negative_control`.

    An option (`mean`, `mean_loo`) replaces the mean baseline as negative control; metrics whose negative control is
    another method (`control` for Δpert) keep it under every option.
    """
    parts = [compute_drf(metrics, specs, mean_method=neg).assign(negative_control=neg) for neg in negative_controls]
    return pd.concat(parts, ignore_index=True)


def bootstrap_mean_ci(values: np.ndarray, *, n_resamples: int, confidence: float, rng: np.random.Generator):
    """Means and percentile bootstrap CIs of the columns of (P, K) `values` over rows, NaN entries skipped.

    Each resample draws P rows with replacement, shared by all columns (so columns stay comparable), and takes each
    column's mean over the drawn rows where it is finite. Returns (mean, low, high), (K,) each; NaN for empty columns.
    """
    values = np.asarray(values, dtype=np.float64)
    P, K = values.shape
    finite = np.isfinite(values)
    mean = np.full(K, np.nan)
    low, high = np.full(K, np.nan), np.full(K, np.nan)
    if P == 0:
        return mean, low, high
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, values, 0.0).sum(axis=0) / finite.sum(axis=0)
        x, w = np.where(finite, values, 0.0), finite.astype(np.float64)
        boots = []
        for start in range(0, n_resamples, _BATCH):
            counts = rng.multinomial(P, np.full(P, 1.0 / P), size=min(_BATCH, n_resamples - start)).astype(np.float64)
            boots.append((counts @ x) / (counts @ w))
    boot = np.vstack(boots)
    tail = (1.0 - confidence) / 2.0
    some = np.isfinite(boot).any(axis=0)
    if some.any():
        low[some], high[some] = np.nanquantile(boot[:, some], [tail, 1.0 - tail], axis=0)
    return mean, low, high


def summarize_drf_ci(
    drf: pd.DataFrame, specs: pd.DataFrame, *, seed: int, n_resamples: int, confidence: float, min_perturbations: int,
) -> pd.DataFrame:
    """Mean DRF and its bootstrap CI over perturbations, per (dataset, positive control, negative control, metric).

    Perturbations ((task, perturbation) pairs) are the resampled units, one draw shared by all metrics of a dataset's
    (positive, negative) pair; the generator is seeded by (seed, dataset, positive, negative). Cells with fewer than
    `min_perturbations` finite DRFs are censored (mean and CI kept, `censored` True). Returns dataset, panel, metric,
    positive_control, negative_control, n, mean_drf, ci_low, ci_high, censored, drf_identical_to.
    """
    rows = []
    keys = ["dataset", "positive_control", "negative_control"]
    for (dataset, positive, negative), group in drf.groupby(keys, sort=True):
        wide = group.pivot(index=["task", "perturbation"], columns="metric", values="drf")
        wide = wide.reindex(columns=[m for m in specs["metric"] if m in wide.columns])
        rng = comparison_rng(seed, dataset, positive, negative)
        mean, low, high = bootstrap_mean_ci(wide.to_numpy(), n_resamples=n_resamples, confidence=confidence, rng=rng)
        n = np.isfinite(wide.to_numpy()).sum(axis=0)
        rows.append(pd.DataFrame(dict(
            dataset=dataset, metric=wide.columns, positive_control=positive, negative_control=negative, n=n,
            mean_drf=mean, ci_low=low, ci_high=high, censored=n < min_perturbations,
        )))
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=[*keys, "metric", "n"])
    out = out.merge(specs[["metric", "panel", "drf_identical_to"]], on="metric", how="left")
    return out[["dataset", "panel", "metric", "positive_control", "negative_control", "n", "mean_drf", "ci_low",
                "ci_high", "censored", "drf_identical_to"]]


# --- BDS and calibrated scores --------------------------------------------------------------------------------


def _better(a: np.ndarray, b: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """a − b signed so that positive means a is better."""
    return a - b if higher_is_better else b - a


def sign_flip_p(d: np.ndarray, *, n_permutations: int, rng: np.random.Generator) -> tuple[int, int, float]:
    """(n, n_better, p) for the count of positive paired differences `d` (NaN dropped), one-sided sign-flip p.

    Under the null each difference's sign is flipped with probability 1/2, independently: a flipped nonzero
    difference changes side, a zero one stays 0. The permuted count is then a sum of fair coins over the m nonzero
    differences, i.e. Binomial(m, 1/2), drawn directly. p = (1 + #{count* ≥ count}) / (1 + n_permutations).
    """
    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    n_better, m = int((d > 0).sum()), int((d != 0).sum())
    if d.size == 0:
        return 0, 0, np.nan
    permuted = rng.binomial(m, 0.5, size=n_permutations)
    return int(d.size), n_better, float((1 + (permuted >= n_better).sum()) / (1 + n_permutations))


def bds_table(metrics: pd.DataFrame, specs: pd.DataFrame, *, negative_controls=("mean",), seed: int,
              n_permutations: int) -> pd.DataFrame:
    """BDS: fraction of perturbations where the positive control beats the negative, with its sign-flip p-value.

    Per (dataset, metric, positive control, negative-control option); ties count as not beating. Returns dataset,
    metric, positive_control, negative_control, n, n_better, bds, p_permutation.
    """
    spec = specs.set_index("metric")
    rows = []
    for (dataset, metric), group in metrics[metrics["metric"].isin(spec.index)].groupby(["dataset", "metric"], sort=True):
        wide = group.pivot(index=["task", "fold", "perturbation"], columns="method", values="value")
        higher = bool(spec.loc[metric, "higher_is_better"])
        for option in negative_controls:
            neg = option if spec.loc[metric, "negative_control"] == "mean" else spec.loc[metric, "negative_control"]
            for positive in POSITIVE_CONTROLS:
                if neg not in wide or positive not in wide:
                    continue
                d = _better(wide[positive].to_numpy(), wide[neg].to_numpy(), higher)
                rng = comparison_rng(seed, dataset, metric, positive, option, "bds")
                n, n_better, p = sign_flip_p(d, n_permutations=n_permutations, rng=rng)
                rows.append(dict(dataset=dataset, metric=metric, positive_control=positive, negative_control=option,
                                 n=n, n_better=n_better, bds=n_better / n if n else np.nan, p_permutation=p))
    return pd.DataFrame(rows, columns=["dataset", "metric", "positive_control", "negative_control", "n", "n_better",
                                       "bds", "p_permutation"])


def calibrated_scores(metrics: pd.DataFrame, specs: pd.DataFrame) -> pd.DataFrame:
    """Each method's per-perturbation calibrated score (m_pos − m_method) / (m_pos − m_neg), SBB's scale.

    0 = as good as the positive control, 1 = as bad as the metric's negative control, not clipped; NaN where the two
    controls tie or a score is NaN. Returns dataset, task, fold, method, perturbation, metric, positive_control,
    calibrated_score, for both positive controls.
    """
    negative = specs.set_index("metric")["negative_control"]
    parts = []
    for metric, group in metrics[metrics["metric"].isin(negative.index)].groupby("metric", sort=False):
        wide = group.pivot(index=["dataset", "task", "fold", "perturbation"], columns="method", values="value")
        neg = wide[negative[metric]] if negative[metric] in wide else np.nan
        for positive in POSITIVE_CONTROLS:
            if positive not in wide:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                span = (wide[positive] - neg).replace(0.0, np.nan)
                score = wide.rsub(wide[positive], axis=0).div(span, axis=0)
            long = score.stack(future_stack=True).rename("calibrated_score").reset_index()
            parts.append(long.assign(metric=metric, positive_control=positive))
    cols = ["dataset", "task", "fold", "method", "perturbation", "metric", "positive_control", "calibrated_score"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


# --- gaming predictors --------------------------------------------------------------------------------------


def gameability(metrics: pd.DataFrame, specs: pd.DataFrame, *, alpha: float,
                positive_control: str = "interpolated_duplicate") -> pd.DataFrame:
    """Does each gaming predictor beat the metric's negative control, and how close does it get to the positive one?

    `metrics`: the controls' and the gaming predictors' scores. Per (dataset, metric, predictor), on perturbations
    where all three are finite: means, `gap_closed` = (mean_pred − mean_neg) / (mean_pos − mean_neg) (0 = the negative
    control, 1 = the positive control, > 1 beyond it), one-sided paired Wilcoxon p that the predictor beats the
    negative control, Bonferroni over the predictors of (dataset, metric); `beats_negative` = adjusted p < alpha;
    `beats_positive` = its mean is better than the positive control's.
    """
    spec = specs.set_index("metric")
    predictors = [p for p in GAMING_PREDICTORS if p in set(metrics["method"])]
    rows = []
    for (dataset, metric), group in metrics[metrics["metric"].isin(spec.index)].groupby(["dataset", "metric"], sort=True):
        wide = group.pivot(index=["task", "fold", "perturbation"], columns="method", values="value")
        neg, higher = spec.loc[metric, "negative_control"], bool(spec.loc[metric, "higher_is_better"])
        block = []
        for predictor in predictors:
            if predictor not in wide or neg not in wide or positive_control not in wide:
                continue
            both = wide[[predictor, neg, positive_control]].dropna()
            g, n_, p_ = (both[c].to_numpy() for c in (predictor, neg, positive_control))
            gap = (g.mean() - n_.mean()) / (p_.mean() - n_.mean()) if len(both) and p_.mean() != n_.mean() else np.nan
            block.append(dict(
                dataset=dataset, metric=metric, predictor=predictor, negative_control=neg, n=len(both),
                mean_predictor=g.mean() if len(both) else np.nan, mean_negative=n_.mean() if len(both) else np.nan,
                mean_positive=p_.mean() if len(both) else np.nan, gap_closed=gap,
                p_beats_negative=wilcoxon_test(g, n_, higher)[1],
                beats_positive=bool(len(both) and _better(g.mean(), p_.mean(), higher) > 0),
            ))
        if block:
            block = pd.DataFrame(block)
            block["p_bonferroni"] = bonferroni(block["p_beats_negative"].to_numpy())[0]
            block["beats_negative"] = block["p_bonferroni"] < alpha
            rows.append(block)
    cols = ["dataset", "metric", "predictor", "negative_control", "n", "mean_predictor", "mean_negative",
            "mean_positive", "gap_closed", "p_beats_negative", "p_bonferroni", "beats_negative", "beats_positive"]
    if not rows:
        return pd.DataFrame(columns=cols)
    rank = {m: i for i, m in enumerate(spec.index)}
    out = pd.concat(rows, ignore_index=True)[cols]
    return out.sort_values(["dataset", "metric"], key=lambda c: c.map(rank) if c.name == "metric" else c,
                           kind="stable").reset_index(drop=True)


# --- which metrics to trust ---------------------------------------------------------------------------------


def trust_table(drf_ci: pd.DataFrame, bds: pd.DataFrame, gaming: pd.DataFrame, *, alpha: float,
                min_drf: float = 0.5, positive_control: str = "interpolated_duplicate",
                negative_control: str = "mean") -> pd.DataFrame:
    """Per (dataset, metric): trustworthy when the DRF's CI lies above `min_drf` (uncensored), the BDS is significant
    (sign-flip p < alpha) and no gaming predictor significantly beats the negative control.

    Returns dataset, panel, metric, n, mean_drf, ci_low, ci_high, censored, bds, p_bds, gamed_by (comma-joined
    predictors, "" if none), drf_identical_to, drf_ok, bds_ok, not_gamed, trustworthy.
    """
    key = ["dataset", "metric"]
    sel = lambda t: t[(t["positive_control"] == positive_control) & (t["negative_control"] == negative_control)]  # noqa: E731
    out = sel(drf_ci).drop(columns=["positive_control", "negative_control"])
    out = out.merge(sel(bds)[key + ["bds", "p_permutation"]].rename(columns={"p_permutation": "p_bds"}), on=key, how="left")
    gamed = gaming[gaming["beats_negative"].astype(bool)].groupby(key)["predictor"].agg(", ".join).rename("gamed_by")
    out = out.merge(gamed.reset_index(), on=key, how="left")
    out["gamed_by"] = out["gamed_by"].fillna("")
    out["drf_ok"] = ~out["censored"].astype(bool) & (out["ci_low"] > min_drf)
    out["bds_ok"] = out["p_bds"] < alpha
    out["not_gamed"] = out["gamed_by"] == ""
    out["trustworthy"] = out["drf_ok"] & out["bds_ok"] & out["not_gamed"]
    return out[["dataset", "panel", "metric", "n", "mean_drf", "ci_low", "ci_high", "censored", "bds", "p_bds",
                "gamed_by", "drf_identical_to", "drf_ok", "bds_ok", "not_gamed", "trustworthy"]]


# --- sensitivity to the DEG test ------------------------------------------------------------------------------


def deg_sensitivity(
    stats: ad.AnnData, folds: dict[str, pd.DataFrame], truth: pd.DataFrame | None, *, dataset: str, variants,
    min_cells: int, modality: str, specs: pd.DataFrame, td_rest_includes_controls: bool = False, panels=("paper",),
    spaces: GeneSpaces | None = None,
    wilcoxon: dict[str, ad.AnnData] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """DRF of every metric, and the DEG calls, under each DEG test variant ((test, alpha) pairs).

    The variant changes the gt test (weights, DEG mask at alpha) and the td test (the interpolated duplicate's α).
    Tests "overestim_var" and "welch" run here from `stats`; "wilcoxon" needs the cells, so its DEG matrices come in
    as `wilcoxon` (half → pertcal.ranksum.wilcoxon_degs, same min_cells and rest).
    Returns (drf: dataset, deg_test, deg_alpha, metric, positive_control, n, mean_drf; degs: dataset, deg_test,
    deg_alpha, mean_degs per gt-tested perturbation, and with `truth` (simulated) precision, recall, n_called, n_true).
    The gene_spaces panel's HVGs and PCs (`spaces`) do not depend on the DEG test and stay fixed.
    """
    drf_rows, deg_rows = [], []
    for test in dict.fromkeys(t for t, _ in variants):
        if test == "wilcoxon":
            if wilcoxon is None or set(wilcoxon) != {"gt", "td"}:
                raise ValueError(f"{dataset}: the wilcoxon DEG test variant needs the rank-sum DEG matrices of both "
                                 f"halves (rule test_degs_wilcoxon), got {sorted(wilcoxon or {})}")
            degs = wilcoxon
        else:
            # the td test's rest as the pipeline's own (processing.td_rest_includes_controls); only the test varies
            degs = {half: test_degs(stats, half, min_cells=min_cells, method=test,
                                    rest_includes_controls=td_rest_includes_controls and half == "td")
                    for half in ("gt", "td")}
        for alpha in [a for t, a in variants if t == test]:
            parts = []
            for task, table in folds.items():
                for fold in sorted(table["fold"].unique()):
                    d = fold_data(stats, table, int(fold), degs_td=degs["td"], modality=modality)
                    for method in CONTROL_METHODS:
                        prediction = as_prediction(predict_baseline(method, d), method=method, dataset=dataset,
                                                   task=task, fold=int(fold))
                        scores = score_fold(prediction, stats, table, int(fold), degs["gt"], deg_alpha=alpha, panels=panels,
                                            spaces=spaces)
                        parts.append(scores.assign(dataset=dataset, task=task, fold=np.int64(fold), method=method))
            drf = compute_drf(pd.concat(parts, ignore_index=True), specs)
            summary = drf.groupby(["metric", "positive_control"], sort=False)["drf"].agg(n="count", mean_drf="mean")
            drf_rows.append(summary.reset_index().assign(dataset=dataset, deg_test=test, deg_alpha=alpha))
            row = dict(dataset=dataset, deg_test=test, deg_alpha=alpha,
                       mean_degs=float(n_degs(degs["gt"], alpha=alpha).mean()) if degs["gt"].n_obs else 0.0)
            if truth is not None:
                row |= deg_recovery(degs["gt"], truth, alpha=alpha)
            deg_rows.append(row)
    drf_out = pd.concat(drf_rows, ignore_index=True)[
        ["dataset", "deg_test", "deg_alpha", "metric", "positive_control", "n", "mean_drf"]
    ]
    return drf_out, pd.DataFrame(deg_rows)

