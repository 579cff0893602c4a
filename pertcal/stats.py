"""Statistics of a benchmark: paired tests of methods against controls, ideal-gap scaling, DRF summaries.

Every function takes tidy tables (see docs/architecture.md) and a metric registry (pertcal.metrics.METRICS:
name -> spec with `higher_is_better`, `perfect`, `reference` in {'ctrl', 'pert', None}) and returns a table.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.stats
from statsmodels.stats.multitest import multipletests

from pertcal.io import PertcalInputError

POSITIVE_CONTROLS = ("technical_duplicate", "interpolated_duplicate")
BASELINE_ORDER = (
    "control",
    "mean",
    "technical_duplicate",
    "interpolated_duplicate",
    "linear",
    "additive",
    "crispr_informed_mean",
)
PAIR_KEYS = ["fold", "perturbation"]
METRICS_COLUMNS = ["dataset", "task", "fold", "method", "perturbation", "metric", "value"]
STATS_COLUMNS = [
    "dataset",
    "task",
    "metric",
    "comparison",
    "reference",
    "method",
    "higher_is_better",
    "n",
    "mean_method",
    "mean_reference",
    "mu_delta",
    "ci_low",
    "ci_high",
    "t",
    "p_t",
    "p_t_bonferroni",
    "n_compared",
    "wilcoxon",
    "p_wilcoxon",
    "p_wilcoxon_bonferroni",
]


def order_methods(methods: Sequence[str]) -> list[str]:
    """Baselines in their canonical order, then models alphabetically."""
    known = [m for m in BASELINE_ORDER if m in set(methods)]
    return known + sorted(set(methods) - set(BASELINE_ORDER))


def negative_control(spec) -> str:
    """The negative-control method of a metric: the control baseline for Δpert metrics (the mean's Δpert is 0)."""
    return spec.negative_control


def metric_direction(spec) -> str:
    """'higher is better' or 'lower is better', for axis labels."""
    return "higher is better" if spec.higher_is_better else "lower is better"


def select_metrics(metrics: pd.DataFrame, dataset: str, task: str, specs: Mapping, *, source: str) -> pd.DataFrame:
    """The validated rows of one (dataset, task) from a results/metrics.parquet table read from `source`."""
    missing = [c for c in METRICS_COLUMNS if c not in metrics.columns]
    if missing:
        raise PertcalInputError(f"dataset {dataset}: {source} lacks column(s) {missing}")
    out = metrics[(metrics["dataset"] == dataset) & (metrics["task"] == task)]
    if out.empty:
        raise PertcalInputError(f"dataset {dataset}: {source} has no rows for task {task!r} (field 'task')")
    unknown = sorted(set(out["metric"]) - set(specs))
    if unknown:
        raise PertcalInputError(f"dataset {dataset}: {source} field 'metric' has unknown metrics {unknown}")
    if out.duplicated(["fold", "method", "perturbation", "metric"]).any():
        raise PertcalInputError(f"dataset {dataset}: {source} repeats (fold, method, perturbation, metric) rows")
    return out.reset_index(drop=True)


def read_task_metrics(source: str, dataset: str, task: str, specs: Mapping) -> pd.DataFrame:
    """Read a metrics parquet (results/{dataset}/metrics.parquet) and return the validated rows of one (dataset, task)."""
    table = pd.read_parquet(source, filters=[("dataset", "==", dataset), ("task", "==", task)])
    return select_metrics(table, dataset, task, specs, source=source)


# --- paired tests -------------------------------------------------------------------------------


def _alternative(higher_is_better: bool) -> str:
    # "better" means a larger score for higher-is-better metrics and a smaller one for errors
    return "greater" if higher_is_better else "less"


def wilcoxon_test(method: np.ndarray, reference: np.ndarray, higher_is_better: bool) -> tuple[float, float]:
    """One-sided Wilcoxon signed-rank test that (n,) `method` beats paired `reference`: (statistic, p); NaN if all tie."""
    d = np.asarray(method, dtype=float) - np.asarray(reference, dtype=float)
    if d.size < 2 or not np.any(d != 0):
        return np.nan, np.nan
    w = scipy.stats.wilcoxon(method, reference, alternative=_alternative(higher_is_better))
    return float(w.statistic), float(w.pvalue)


def paired_test(
    method: np.ndarray,
    reference: np.ndarray,
    higher_is_better: bool,
    *,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> dict:
    """One-sided paired tests that `method` beats `reference`; (n,) aligned scores, NaN pairs dropped.

    Returns n, means, mu_delta = mean(method - reference) (raw sign), its bootstrap percentile CI (`n_resamples`
    resamples drawn from `rng`, seed 0 if None), paired t (statistic and one-sided p) and Wilcoxon signed-rank
    (statistic and one-sided p).
    """
    method = np.asarray(method, dtype=float)
    reference = np.asarray(reference, dtype=float)
    keep = np.isfinite(method) & np.isfinite(reference)
    a, b = method[keep], reference[keep]
    d = a - b
    out = dict(
        n=int(d.size),
        mean_method=float(a.mean()) if d.size else np.nan,
        mean_reference=float(b.mean()) if d.size else np.nan,
        mu_delta=float(d.mean()) if d.size else np.nan,
        ci_low=np.nan,
        ci_high=np.nan,
        t=np.nan,
        p_t=np.nan,
        wilcoxon=np.nan,
        p_wilcoxon=np.nan,
    )
    if d.size < 2:
        return out
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # constant differences (e.g. a method equal to its reference) give NaN statistics, not errors
        warnings.simplefilter("ignore")
        t = scipy.stats.ttest_rel(a, b, alternative=_alternative(higher_is_better))
        out["wilcoxon"], out["p_wilcoxon"] = wilcoxon_test(a, b, higher_is_better)
        ci = scipy.stats.bootstrap(
            (d,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            batch=1000,
            rng=rng if rng is not None else np.random.default_rng(0),
        ).confidence_interval
    out["t"], out["p_t"] = float(t.statistic), float(t.pvalue)
    out["ci_low"], out["ci_high"] = float(ci.low), float(ci.high)
    return out


def comparison_rng(seed: int, *key: str) -> np.random.Generator:
    """A generator seeded by the run's seed and the comparison's names, so results do not depend on order."""
    return np.random.default_rng([seed, zlib.crc32("|".join(key).encode())])


def bonferroni(pvalues: np.ndarray) -> tuple[np.ndarray, int]:
    """Bonferroni-adjusted p-values over the finite entries of (m,) `pvalues`, and the family size."""
    p = np.asarray(pvalues, dtype=float)
    finite = np.isfinite(p)
    adjusted = np.full(p.shape, np.nan)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="bonferroni")[1]
    return adjusted, int(finite.sum())


def _paired_wide(metrics: pd.DataFrame) -> pd.DataFrame:
    """(fold, perturbation) × method table of one metric's values."""
    return metrics.pivot(index=PAIR_KEYS, columns="method", values="value")


def compare_methods(
    metrics: pd.DataFrame,
    specs: Mapping,
    *,
    seed: int,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Every method vs the metric's negative control (and vs `additive` in the combo task), paired by perturbation.

    `metrics`: long table (dataset, task, fold, method, perturbation, metric, value). Bonferroni runs over the
    methods compared to the same reference within (dataset, task, metric). Returns STATS_COLUMNS, one row per
    (dataset, task, metric, comparison, method).
    """
    rows = []
    for (dataset, task, metric), group in metrics.groupby(["dataset", "task", "metric"], sort=True):
        spec = specs[metric]
        wide = _paired_wide(group)
        references = {"negative_control": negative_control(spec)}
        if task == "combo" and "additive" in wide.columns:
            references["additive"] = "additive"
        for comparison, reference in references.items():
            if reference not in wide.columns:
                continue
            block = []
            for method in order_methods([m for m in wide.columns if m != reference]):
                res = paired_test(
                    wide[method].to_numpy(),
                    wide[reference].to_numpy(),
                    spec.higher_is_better,
                    n_resamples=n_resamples,
                    confidence=confidence,
                    rng=comparison_rng(seed, dataset, task, metric, reference, method),
                )
                block.append(
                    dict(
                        dataset=dataset,
                        task=task,
                        metric=metric,
                        comparison=comparison,
                        reference=reference,
                        method=method,
                        higher_is_better=bool(spec.higher_is_better),
                        **res,
                    )
                )
            block = pd.DataFrame(block)
            block["p_t_bonferroni"], block["n_compared"] = bonferroni(block["p_t"].to_numpy())
            block["p_wilcoxon_bonferroni"] = bonferroni(block["p_wilcoxon"].to_numpy())[0]
            rows.append(block)
    if not rows:
        return pd.DataFrame(columns=STATS_COLUMNS)
    out = pd.concat(rows, ignore_index=True)[STATS_COLUMNS]
    return _order_metrics(out, specs)


def _order_metrics(df: pd.DataFrame, specs: Mapping) -> pd.DataFrame:
    """Rows sorted by dataset, task and the registry's metric order, keeping the method order within."""
    rank = {m: i for i, m in enumerate(specs)}
    return df.sort_values(
        ["dataset", "task", "metric"], key=lambda s: s.map(rank) if s.name == "metric" else s, kind="stable"
    ).reset_index(drop=True)


# --- per-method summaries --------------------------------------------------------------------------


def summarize_methods(metrics: pd.DataFrame, specs: Mapping) -> pd.DataFrame:
    """Mean ± SEM over perturbations (all folds pooled) per (dataset, task, method, metric), with the best marked.

    `is_best` marks the best mean per (dataset, task, metric) among methods that are not positive controls
    (the duplicates are references, not contenders). Returns dataset, task, method, metric, n, mean, sem, is_best.
    """
    grouped = metrics.dropna(subset=["value"]).groupby(["dataset", "task", "method", "metric"], sort=True)["value"]
    out = grouped.agg(n="count", mean="mean").reset_index()
    out["sem"] = grouped.sem().to_numpy()  # ddof = 1; NaN for a single value
    contender = ~out["method"].isin(POSITIVE_CONTROLS)
    higher = out["metric"].map(lambda m: specs[m].higher_is_better)
    # comparing the sign-flipped mean lets one max() serve both directions
    score = out["mean"].where(higher, -out["mean"]).where(contender)
    best = score.groupby([out["dataset"], out["task"], out["metric"]]).transform("max")
    out["is_best"] = contender & (score == best)
    rank = {m: i for i, m in enumerate(order_methods(out["method"].unique()))}
    out = out.sort_values("method", key=lambda s: s.map(rank), kind="stable")
    return _order_metrics(out, specs)[["dataset", "task", "method", "metric", "n", "mean", "sem", "is_best"]]


def ideal_gap_closed(metrics: pd.DataFrame, specs: Mapping) -> pd.DataFrame:
    """Fraction of the gap between negative control and perfect score each method closes, per metric.

    gap = (mean(method) - mean(negative control)) / (perfect - mean(negative control)), means over the
    perturbations both score; 0 = no better than the negative control, 1 = perfect, < 0 = worse.
    Returns dataset, task, method, metric, negative_control, gap.
    """
    rows = []
    for (dataset, task, metric), group in metrics.groupby(["dataset", "task", "metric"], sort=True):
        spec = specs[metric]
        wide = _paired_wide(group)
        neg = negative_control(spec)
        if neg not in wide.columns:
            continue
        for method in order_methods(wide.columns):
            both = wide[method].notna() & wide[neg].notna()
            m, n = wide.loc[both, method].mean(), wide.loc[both, neg].mean()
            denom = spec.perfect - n
            gap = (m - n) / denom if both.any() and denom != 0 else np.nan
            rows.append(dict(dataset=dataset, task=task, method=method, metric=metric, negative_control=neg, gap=gap))
    return _order_metrics(pd.DataFrame(rows, columns=["dataset", "task", "method", "metric", "negative_control", "gap"]), specs)


def compare_controls(metrics: pd.DataFrame, specs: Mapping) -> pd.DataFrame:
    """One-sided paired Wilcoxon p-values among the negative control and the two duplicates, per metric.

    Pairs: technical duplicate vs negative control, interpolated duplicate vs negative control, interpolated vs
    technical duplicate (each "first beats second"). Returns dataset, task, metric, method, reference, n, p_wilcoxon.
    """
    rows = []
    for (dataset, task, metric), group in metrics.groupby(["dataset", "task", "metric"], sort=True):
        spec = specs[metric]
        wide = _paired_wide(group)
        neg = negative_control(spec)
        pairs = [
            ("technical_duplicate", neg),
            ("interpolated_duplicate", neg),
            ("interpolated_duplicate", "technical_duplicate"),
        ]
        for method, reference in pairs:
            if method not in wide.columns or reference not in wide.columns:
                continue
            pair = wide[[method, reference]].dropna()
            p = wilcoxon_test(pair[method].to_numpy(), pair[reference].to_numpy(), spec.higher_is_better)[1]
            rows.append(
                dict(dataset=dataset, task=task, metric=metric, method=method, reference=reference, n=len(pair), p_wilcoxon=p)
            )
    return _order_metrics(
        pd.DataFrame(rows, columns=["dataset", "task", "metric", "method", "reference", "n", "p_wilcoxon"]), specs
    )


# --- DRF summaries ---------------------------------------------------------------------------------


def summarize_drf(drf: pd.DataFrame, positive_control: str, min_perturbations: int = 10) -> pd.DataFrame:
    """Mean DRF per (dataset, metric) for one positive control; cells with < `min_perturbations` censored.

    Returns dataset, metric, n (perturbations with a finite DRF), mean_drf (NaN when censored), censored.
    """
    sel = drf[(drf["positive_control"] == positive_control) & np.isfinite(drf["drf"])]
    out = sel.groupby(["dataset", "metric"], sort=True)["drf"].agg(n="count", mean_drf="mean").reset_index()
    out["censored"] = out["n"] < min_perturbations
    out.loc[out["censored"], "mean_drf"] = np.nan
    return out


def compare_drf_mse_wmse(drf: pd.DataFrame, positive_control: str, min_perturbations: int = 10) -> pd.DataFrame:
    """Per dataset: one-sided paired Wilcoxon that DRF(wmse) > DRF(mse), Bonferroni over the uncensored datasets.

    Returns dataset, n, mean_mse, mean_wmse, p_wilcoxon, p_bonferroni, censored.
    """
    sel = drf[(drf["positive_control"] == positive_control) & drf["metric"].isin(["mse", "wmse"])]
    rows = []
    for dataset, group in sel.groupby("dataset", sort=True):
        wide = group.pivot(index=["task", "perturbation"], columns="metric", values="drf")
        wide = wide.reindex(columns=["mse", "wmse"]).dropna()
        p = np.nan
        if len(wide) >= min_perturbations:
            p = wilcoxon_test(wide["wmse"].to_numpy(), wide["mse"].to_numpy(), higher_is_better=True)[1]
        rows.append(
            dict(
                dataset=dataset,
                n=len(wide),
                mean_mse=wide["mse"].mean(),
                mean_wmse=wide["wmse"].mean(),
                p_wilcoxon=p,
                censored=len(wide) < min_perturbations,
            )
        )
    out = pd.DataFrame(rows, columns=["dataset", "n", "mean_mse", "mean_wmse", "p_wilcoxon", "censored"])
    out["p_bonferroni"] = bonferroni(out["p_wilcoxon"].to_numpy())[0]
    return out

