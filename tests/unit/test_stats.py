"""pertcal.stats against scipy/statsmodels and cases worked by hand.

Also home of the synthetic metric and DRF tables test_plots.py and test_tables.py render.
"""

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from pertcal import stats
from pertcal.io import PertcalInputError
from pertcal.metrics import panel_specs

METRICS = panel_specs()  # the paper's 13 metrics, the panel the per-dataset figures and tables show

MODELS = ("fmlp", "latent_additive", "gears")


def synthetic_metrics(dataset="toy", task="single", n_folds=5, per_fold=12, seed=0, models=MODELS) -> pd.DataFrame:
    """A results/metrics.parquet-like table: controls, baselines and models with distinct quality levels."""
    rng = np.random.default_rng(seed)
    quality = {"control": 0.6, "mean": 0.35, "technical_duplicate": 0.12, "interpolated_duplicate": 0.06}
    quality |= {"linear": 0.33, "additive": 0.3, "crispr_informed_mean": 0.34}
    quality |= {m: 0.2 + 0.05 * i for i, m in enumerate(models)}
    methods = [m for m in quality if not (m == "additive" and task == "single") and not (m == "linear" and task == "combo")]
    rows = []
    for fold in range(n_folds):
        for p in range(fold * per_fold, (fold + 1) * per_fold):
            for method in methods:
                for name, spec in METRICS.items():
                    v = quality[method] + rng.normal(0, 0.1)
                    v = 1 - v if spec.higher_is_better else v
                    # the mean baseline's Δpert is 0, so its correlation is undefined
                    if spec.reference == "pert" and method == "mean" and name.startswith("pearson"):
                        v = np.nan
                    rows.append((dataset, task, fold, method, f"P{p}", name, v))
    return pd.DataFrame(rows, columns=stats.METRICS_COLUMNS)


def synthetic_drf(sizes=None, seed=1) -> pd.DataFrame:
    """A results/calibration/drf.parquet-like table; dataset `tiny` has too few perturbations (censored)."""
    sizes = sizes or {"weak": 40, "strong": 30, "tiny": 6}
    strength = {"weak": -0.1, "strong": 0.6, "tiny": 0.3}
    rng = np.random.default_rng(seed)
    rows = []
    for ds, n in sizes.items():
        for p in range(n):
            for metric in METRICS:
                for pc, shift in (("interpolated_duplicate", 0.0), ("technical_duplicate", -0.1)):
                    v = strength.get(ds, 0.2) + shift + (0.25 if metric == "wmse" else 0) + rng.normal(0, 0.3)
                    rows.append((ds, "single", f"P{p}", metric, pc, float(np.clip(v, -1, 1))))
    return pd.DataFrame(rows, columns=["dataset", "task", "perturbation", "metric", "positive_control", "drf"])


# --- paired tests: hand-worked and scipy ----------------------------------------------------------


def test_paired_test_hand_worked():
    # d = [1, 2, 3, 4]: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = sqrt(15); Wilcoxon W+ = 10 = all 16 sign
    # patterns' maximum, so the exact one-sided p is 1/16.
    res = stats.paired_test(np.array([2.0, 4, 6, 8]), np.array([1.0, 2, 3, 4]), higher_is_better=True, n_resamples=200)
    assert res["n"] == 4
    assert res["mu_delta"] == pytest.approx(2.5)
    assert res["t"] == pytest.approx(math.sqrt(15))
    assert res["p_t"] == pytest.approx(scipy.stats.t.sf(math.sqrt(15), df=3))
    assert res["p_t"] == pytest.approx(0.01522, abs=5e-5)
    assert res["wilcoxon"] == 10
    assert res["p_wilcoxon"] == pytest.approx(1 / 16)


def test_paired_test_lower_is_better_flips_the_alternative():
    worse, better = np.array([2.0, 4, 6, 8]), np.array([1.0, 2, 3, 4])
    # an error metric: the smaller scores win, so `better` beats `worse` with the same p as above
    res = stats.paired_test(better, worse, higher_is_better=False, n_resamples=200)
    assert res["mu_delta"] == pytest.approx(-2.5)
    assert res["t"] == pytest.approx(-math.sqrt(15))
    assert res["p_t"] == pytest.approx(scipy.stats.t.sf(math.sqrt(15), df=3))
    assert res["p_wilcoxon"] == pytest.approx(1 / 16)
    # and the worse method is not significantly better
    res = stats.paired_test(worse, better, higher_is_better=False, n_resamples=200)
    assert res["p_t"] > 0.95 and res["p_wilcoxon"] == pytest.approx(1.0)


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_paired_test_matches_scipy(higher_is_better):
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.3, 1, 25), rng.normal(0, 1, 25)
    a[[2, 7]] = np.nan  # dropped with their pairs
    keep = ~np.isnan(a)
    alternative = "greater" if higher_is_better else "less"
    t = scipy.stats.ttest_rel(a[keep], b[keep], alternative=alternative)
    w = scipy.stats.wilcoxon(a[keep], b[keep], alternative=alternative)
    res = stats.paired_test(a, b, higher_is_better, n_resamples=500)
    assert res["n"] == 23
    assert res["t"] == pytest.approx(t.statistic, rel=1e-12)
    assert res["p_t"] == pytest.approx(t.pvalue, rel=1e-12)
    assert res["p_wilcoxon"] == pytest.approx(w.pvalue, rel=1e-12)
    assert res["mean_method"] - res["mean_reference"] == pytest.approx(res["mu_delta"])


def test_paired_test_degenerate_inputs_give_nan_not_errors():
    same = np.array([0.1, 0.2, 0.3])
    res = stats.paired_test(same, same, True, n_resamples=100)
    assert res["n"] == 3 and res["mu_delta"] == 0 and np.isnan(res["p_wilcoxon"])
    res = stats.paired_test(np.array([np.nan, 1.0]), np.array([1.0, np.nan]), True)
    assert res["n"] == 0 and np.isnan(res["mu_delta"]) and np.isnan(res["p_t"])


def test_bootstrap_ci_is_scipys_percentile_interval_and_seed_stable():
    rng = np.random.default_rng(5)
    a, b = rng.normal(1, 1, 40), rng.normal(0, 1, 40)
    res = stats.paired_test(a, b, True, n_resamples=10_000, rng=stats.comparison_rng(42, "x"))
    ref = scipy.stats.bootstrap(
        (a - b,), np.mean, n_resamples=10_000, method="percentile", rng=stats.comparison_rng(42, "x")
    ).confidence_interval
    assert (res["ci_low"], res["ci_high"]) == pytest.approx((ref.low, ref.high), rel=1e-12)
    # close to the normal-theory interval mean ± t(0.975) · SE
    d = a - b
    half = scipy.stats.t.ppf(0.975, len(d) - 1) * scipy.stats.sem(d)
    assert res["ci_low"] == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert res["ci_high"] == pytest.approx(d.mean() + half, abs=0.1 * half)
    again = stats.paired_test(a, b, True, n_resamples=10_000, rng=stats.comparison_rng(42, "x"))
    other = stats.paired_test(a, b, True, n_resamples=10_000, rng=stats.comparison_rng(43, "x"))
    assert (again["ci_low"], again["ci_high"]) == (res["ci_low"], res["ci_high"])
    assert (other["ci_low"], other["ci_high"]) != (res["ci_low"], res["ci_high"])


# --- compare_methods -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single():
    return synthetic_metrics(per_fold=8)


@pytest.fixture(scope="module")
def single_stats(single):
    return stats.compare_methods(single, METRICS, seed=7, n_resamples=300)


def test_compare_methods_pairs_by_fold_and_perturbation(single, single_stats):
    row = single_stats.query("metric == 'mse' and method == 'fmlp'").iloc[0]
    wide = single[single["metric"] == "mse"].pivot_table(index=["fold", "perturbation"], columns="method", values="value")
    t = scipy.stats.ttest_rel(wide["fmlp"], wide["mean"], alternative="less")
    assert row["reference"] == "mean" and row["comparison"] == "negative_control"
    assert row["n"] == 40
    assert row["t"] == pytest.approx(t.statistic) and row["p_t"] == pytest.approx(t.pvalue)
    assert row["mu_delta"] == pytest.approx((wide["fmlp"] - wide["mean"]).mean())
    assert row["ci_low"] < row["mu_delta"] < row["ci_high"] < 0


def test_compare_methods_uses_control_for_delta_pert_metrics(single_stats):
    refs = single_stats.groupby("metric")["reference"].unique()
    for name, spec in METRICS.items():
        assert list(refs[name]) == ["control" if spec.reference == "pert" else "mean"]


def test_bonferroni_factor_is_the_number_of_compared_methods(single_stats):
    block = single_stats.query("metric == 'pearson_deltactrl'")
    # all methods but the reference, none undefined
    assert len(block) == block["n_compared"].iloc[0] == 8
    expected = np.minimum(block["p_t"] * 8, 1.0)
    np.testing.assert_allclose(block["p_t_bonferroni"], expected, rtol=1e-12)
    np.testing.assert_allclose(block["p_wilcoxon_bonferroni"], np.minimum(block["p_wilcoxon"] * 8, 1.0), rtol=1e-12)
    # the mean baseline's Pearson on Δpert is undefined: it is listed with n = 0 but not counted
    pert = single_stats.query("metric == 'pearson_deltapert'")
    assert pert.set_index("method").loc["mean", "n"] == 0
    assert (pert["n_compared"] == 7).all()


def test_direction_aware_significance(single_stats):
    # models are better than the mean baseline and the control baseline is worse, in both directions of metric
    for metric in ("mse", "pearson_deltactrl"):
        block = single_stats.query("metric == @metric").set_index("method")
        assert block.loc["fmlp", "p_t_bonferroni"] < 1e-3
        assert block.loc["control", "p_t_bonferroni"] == pytest.approx(1.0)
        sign = 1 if METRICS[metric].higher_is_better else -1
        assert sign * block.loc["fmlp", "mu_delta"] > 0 and sign * block.loc["control", "mu_delta"] < 0


def test_compare_methods_adds_the_additive_reference_for_combos():
    combo = synthetic_metrics(task="combo", n_folds=2, per_fold=8, models=("fmlp",))
    out = stats.compare_methods(combo[combo["metric"].isin(["mse", "nir"])], METRICS, seed=1, n_resamples=100)
    assert set(out["comparison"]) == {"negative_control", "additive"}
    assert set(out.query("comparison == 'additive'")["reference"]) == {"additive"}
    assert "additive" not in set(out.query("comparison == 'additive'")["method"])


def test_compare_methods_seed_stable(single):
    sub = single[single["metric"].isin(["mse", "nir"])]
    a = stats.compare_methods(sub, METRICS, seed=11, n_resamples=300)
    b = stats.compare_methods(sub.sample(frac=1, random_state=0), METRICS, seed=11, n_resamples=300)
    pd.testing.assert_frame_equal(a, b)
    c = stats.compare_methods(sub, METRICS, seed=12, n_resamples=300)
    pd.testing.assert_series_equal(a["mu_delta"], c["mu_delta"])
    assert not np.allclose(a["ci_low"], c["ci_low"])


# --- summaries -------------------------------------------------------------------------------------


def _tiny(values):
    """A metrics table (dataset d, task single, fold 0) from {metric: {method: (value on A, value on B, …)}}."""
    rows = [("d", "single", 0, method, "ABC"[i], metric, v)
            for metric, by_method in values.items() for method, row in by_method.items() for i, v in enumerate(row)]
    return pd.DataFrame(rows, columns=stats.METRICS_COLUMNS)


def test_ideal_gap_closed_hand_worked():
    metrics = _tiny({
        # perturbation C is scored by fmlp only: it must not enter the means
        "mse": {"mean": (0.4, 0.6), "fmlp": (0.2, 0.3, 9.0)},
        "pearson_deltactrl": {"mean": (0.2, 0.4), "fmlp": (0.65, 0.65)},
        "pearson_deltapert": {"control": (0.0, 0.2), "mean": (np.nan, np.nan), "fmlp": (0.55, 0.55)},
    })
    gap = stats.ideal_gap_closed(metrics, METRICS).set_index(["method", "metric"])["gap"]
    # mse: (0.25 − 0.5) / (0 − 0.5); Pearson Δctrl: (0.65 − 0.3) / (1 − 0.3); Δpert vs control: (0.55 − 0.1) / 0.9
    assert gap["fmlp", "mse"] == pytest.approx(0.5)
    assert gap["fmlp", "pearson_deltactrl"] == pytest.approx(0.5)
    assert gap["fmlp", "pearson_deltapert"] == pytest.approx(0.5)
    assert gap["mean", "mse"] == 0 and gap["control", "pearson_deltapert"] == 0
    assert np.isnan(gap["mean", "pearson_deltapert"])


def test_summarize_methods_mean_sem_and_best_excludes_duplicates():
    metrics = _tiny({
        "mse": {"mean": (0.4, 0.6), "fmlp": (0.3, 0.5), "interpolated_duplicate": (0.1, 0.1)},
        "nir": {"mean": (0.5, 0.7), "fmlp": (0.4, np.nan), "technical_duplicate": (0.9, 0.9)},
    })
    out = stats.summarize_methods(metrics, METRICS).set_index(["method", "metric"])
    assert out.loc[("fmlp", "mse"), "mean"] == pytest.approx(0.4)
    assert out.loc[("fmlp", "mse"), "sem"] == pytest.approx(scipy.stats.sem([0.3, 0.5]))
    assert out.loc[("fmlp", "nir"), "n"] == 1 and np.isnan(out.loc[("fmlp", "nir"), "sem"])
    best = out[out["is_best"]].index.tolist()
    # lower mse wins (fmlp, not the duplicate); higher nir wins (mean, not the duplicate)
    assert sorted(best) == [("fmlp", "mse"), ("mean", "nir")]


def test_summarize_drf_censors_cells_with_fewer_than_ten_perturbations():
    drf = synthetic_drf({"a": 10, "b": 9})
    drf.loc[(drf["dataset"] == "a") & (drf["metric"] == "nir") & (drf["perturbation"] == "P0"), "drf"] = np.nan
    cells = stats.summarize_drf(drf, "interpolated_duplicate", min_perturbations=10).set_index(["dataset", "metric"])
    assert not cells.loc[("a", "mse"), "censored"] and cells.loc[("a", "mse"), "n"] == 10
    expected = drf.query("dataset == 'a' and metric == 'mse' and positive_control == 'interpolated_duplicate'")["drf"].mean()
    assert cells.loc[("a", "mse"), "mean_drf"] == pytest.approx(expected)
    # a NaN DRF does not count: 9 left
    assert cells.loc[("a", "nir"), "censored"] and np.isnan(cells.loc[("a", "nir"), "mean_drf"])
    assert cells.xs("b", level="dataset")["censored"].all()


def test_compare_drf_mse_wmse_matches_scipy_with_bonferroni_over_datasets():
    drf = synthetic_drf()
    out = stats.compare_drf_mse_wmse(drf, "interpolated_duplicate").set_index("dataset")
    assert out.loc["tiny", "censored"] and np.isnan(out.loc["tiny", "p_bonferroni"])
    for ds in ("weak", "strong"):
        sel = drf.query("dataset == @ds and positive_control == 'interpolated_duplicate'")
        wide = sel.pivot(index="perturbation", columns="metric", values="drf")
        p = scipy.stats.wilcoxon(wide["wmse"], wide["mse"], alternative="greater").pvalue
        assert out.loc[ds, "p_wilcoxon"] == pytest.approx(p)
        assert out.loc[ds, "p_bonferroni"] == pytest.approx(min(1.0, 2 * p))


def test_compare_controls_orders_and_directions():
    out = stats.compare_controls(synthetic_metrics(per_fold=6), METRICS)
    pairs = set(zip(out["method"], out["reference"]))
    assert ("interpolated_duplicate", "technical_duplicate") in pairs
    assert ("technical_duplicate", "control") in pairs and ("technical_duplicate", "mean") in pairs
    assert (out.query("reference != 'technical_duplicate'")["p_wilcoxon"] < 1e-4).all()


def test_select_metrics_rejects_bad_tables():
    m = synthetic_metrics(per_fold=2, n_folds=2)
    with pytest.raises(PertcalInputError, match="toy.*lacks column"):
        stats.select_metrics(m.drop(columns="fold"), "toy", "single", METRICS, source="metrics.parquet")
    with pytest.raises(PertcalInputError, match="no rows for task 'combo'"):
        stats.select_metrics(m, "toy", "combo", METRICS, source="metrics.parquet")
    with pytest.raises(PertcalInputError, match="unknown metrics"):
        stats.select_metrics(m.replace({"metric": {"nir": "rank"}}), "toy", "single", METRICS, source="metrics.parquet")
    with pytest.raises(PertcalInputError, match="repeats"):
        stats.select_metrics(pd.concat([m, m.head(1)]), "toy", "single", METRICS, source="metrics.parquet")
