"""pertcal.calibration against hand-worked cases, scipy's bootstrap and binomial test, the metrics' algebra and
scPertEval's own `bds` calibrator."""

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from pertcal import calibration as cal
from pertcal.drf import dynamic_range_fraction
from pertcal.metrics import DRF_IDENTITIES, METRICS, metric_specs, score_predictions

SPECS = metric_specs()


# --- bootstrap CI -----------------------------------------------------------------------------------------------


def test_bootstrap_two_points_by_hand():
    # Resampled means of {0, 1} with n = 2 are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # percentiles are 0 and 1; a constant column has a point interval; a NaN entry is skipped, not counted as 0.
    values = np.array([[0.0, 3.0, np.nan], [1.0, 3.0, 2.0]])
    mean, low, high = cal.bootstrap_mean_ci(values, n_resamples=4000, confidence=0.95, rng=np.random.default_rng(1))
    np.testing.assert_allclose(mean, [0.5, 3.0, 2.0])
    np.testing.assert_allclose(low, [0.0, 3.0, 2.0])
    np.testing.assert_allclose(high, [1.0, 3.0, 2.0])


def test_bootstrap_matches_scipy_percentile_interval():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 1.0, 60)
    ref = scipy.stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.9,
                                rng=np.random.default_rng(5)).confidence_interval
    _, low, high = cal.bootstrap_mean_ci(x[:, None], n_resamples=20000, confidence=0.9, rng=np.random.default_rng(7))
    # two Monte Carlo estimates of the same quantiles: the standard error of the mean is ~0.18 here
    assert low[0] == pytest.approx(ref.low, abs=0.02)
    assert high[0] == pytest.approx(ref.high, abs=0.02)


def test_bootstrap_is_seeded():
    x = np.random.default_rng(0).normal(size=(30, 3))
    a = cal.bootstrap_mean_ci(x, n_resamples=500, confidence=0.95, rng=np.random.default_rng(3))
    b = cal.bootstrap_mean_ci(x, n_resamples=500, confidence=0.95, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(np.array(a), np.array(b))


# --- BDS and its permutation p ----------------------------------------------------------------------------------


def _literal_sign_flips(d, n_permutations, rng):
    """The sign-flip null drawn literally: flip each difference with probability 1/2, count positives."""
    signs = rng.choice([-1.0, 1.0], size=(n_permutations, len(d)))
    return ((signs * d) > 0).sum(axis=1)


def test_sign_flip_p_matches_binomial_test_and_literal_flips():
    # 12 better, 5 worse, 3 ties: under sign flips the count of positives is Binomial(17, 1/2).
    d = np.array([0.3] * 12 + [-0.2] * 5 + [0.0] * 3 + [np.nan])
    n, n_better, p = cal.sign_flip_p(d, n_permutations=40000, rng=np.random.default_rng(0))
    assert (n, n_better) == (20, 12)
    exact = scipy.stats.binomtest(12, 17, 0.5, alternative="greater").pvalue
    literal = _literal_sign_flips(d[np.isfinite(d)], 40000, np.random.default_rng(1))
    assert p == pytest.approx(exact, abs=0.005)
    assert p == pytest.approx((1 + (literal >= 12).sum()) / 40001, abs=0.005)


def test_sign_flip_p_all_better_by_hand():
    # five wins of five: exact p = 1/32; the Monte Carlo p never goes below 1 / (1 + n_permutations)
    _, _, p = cal.sign_flip_p(np.ones(5), n_permutations=50000, rng=np.random.default_rng(2))
    assert p == pytest.approx(1 / 32, abs=0.003)
    _, _, p = cal.sign_flip_p(np.ones(40), n_permutations=100, rng=np.random.default_rng(2))
    assert p == 1 / 101


def _table(values, dataset="d", task="single", fold=0):
    """{(method, perturbation, metric): value} → a metrics table."""
    return pd.DataFrame(
        [dict(dataset=dataset, task=task, fold=fold, method=m, perturbation=p, metric=k, value=v)
         for (m, p, k), v in values.items()]
    )


def test_bds_counts_wins_with_the_metric_direction_and_negative_control():
    v = {}
    for i, (pos, neg) in enumerate([(0.5, 1.0), (2.0, 1.0), (0.1, 0.3), (0.4, 0.4)]):
        v |= {("interpolated_duplicate", f"P{i}", "mse"): pos, ("mean", f"P{i}", "mse"): neg,
              ("technical_duplicate", f"P{i}", "mse"): neg, ("mean_loo", f"P{i}", "mse"): 10.0,
              ("interpolated_duplicate", f"P{i}", "pearson_deltapert"): 0.5, ("control", f"P{i}", "pearson_deltapert"): 0.2,
              ("mean", f"P{i}", "pearson_deltapert"): np.nan}
    out = cal.bds_table(_table(v), SPECS, negative_controls=("mean", "mean_loo"), seed=0, n_permutations=100)
    got = out.set_index(["metric", "positive_control", "negative_control"])
    # mse, lower is better: wins on P0 and P2, loses on P1, ties on P3
    assert got.loc[("mse", "interpolated_duplicate", "mean"), ["n", "n_better", "bds"]].tolist() == [4, 2, 0.5]
    assert got.loc[("mse", "technical_duplicate", "mean"), "n_better"] == 0
    assert got.loc[("mse", "interpolated_duplicate", "mean_loo"), "bds"] == 1.0
    # Δpert: the control baseline under every option, so the NaN mean plays no part
    assert got.loc[("pearson_deltapert", "interpolated_duplicate", "mean_loo"), "bds"] == 1.0


def _scperteval_bds(metric: str, pos, neg) -> tuple[np.ndarray, float]:
    """scPertEval 0.2.0's `bds` calibrator: per-perturbation wins, and their aggregate."""
    calibrators = pytest.importorskip("scperteval.calibrators")
    from scperteval.protocols.metrics import mse
    from scperteval.types import Protocol

    spec = SPECS.set_index("metric").loc[metric]
    protocol = Protocol(name=metric, metric=mse, representation="centroid",
                        better="higher" if spec.higher_is_better else "lower", perfect=float(spec.perfect))
    bds = calibrators.CALIBRATORS["bds"]
    wins = np.array([bds.per_pert({"positive": a, "negative": b}, protocol) for a, b in zip(pos, neg)])
    return wins, bds.aggregate(wins)["bds"]


def _bds_values(draws: dict, negative: dict) -> pd.DataFrame:
    v = {}
    for metric, (neg, pos) in draws.items():
        for i in range(len(neg)):
            v |= {(negative[metric], f"P{i:02d}", metric): neg[i], ("interpolated_duplicate", f"P{i:02d}", metric): pos[i]}
    return _table(v)


def test_bds_equals_scperteval_bds_calibrator():
    rng = np.random.default_rng(9)
    P = 60
    draws = {
        "mse": (rng.exponential(1.0, P), rng.exponential(0.8, P)),
        "pearson_deltactrl": (rng.uniform(-1, 1, P), rng.uniform(-1, 1, P)),
        "pearson_deltapert": (rng.uniform(-1, 1, P), rng.uniform(-1, 1, P)),
    }
    for neg, pos in draws.values():
        pos[:4] = neg[:4]  # ties lose in both
    negative = {"mse": "mean", "pearson_deltactrl": "mean", "pearson_deltapert": "control"}
    ours = cal.bds_table(_bds_values(draws, negative), SPECS, seed=0, n_permutations=10).set_index("metric")
    for metric, (neg, pos) in draws.items():
        wins, theirs = _scperteval_bds(metric, pos, neg)
        assert ours.loc[metric, "n_better"] == wins.sum() and ours.loc[metric, "n"] == P
        assert ours.loc[metric, "bds"] == theirs, metric
        assert 0 < theirs < 1


def test_bds_differs_from_scperteval_on_undefined_scores():
    # A NaN score: pertcal drops the perturbation from the BDS, scPertEval counts it as a loss (NaN > x is False).
    neg, pos = np.array([0.5, 0.5, 0.5, np.nan]), np.array([0.2, 0.9, np.nan, 0.1])
    ours = cal.bds_table(_bds_values({"mse": (neg, pos)}, {"mse": "mean"}), SPECS, seed=0, n_permutations=10)
    _, theirs = _scperteval_bds("mse", pos, neg)
    assert ours.loc[0, ["n", "n_better", "bds"]].tolist() == [2, 1, 0.5]
    assert theirs == 0.25


# --- calibrated scores, gameability, trust ----------------------------------------------------------------------


def test_calibrated_scores_by_hand():
    v = {("interpolated_duplicate", "A", "pearson_deltactrl"): 0.9, ("mean", "A", "pearson_deltactrl"): 0.5,
         ("technical_duplicate", "A", "pearson_deltactrl"): 0.8, ("fmlp", "A", "pearson_deltactrl"): 0.7,
         ("interpolated_duplicate", "A", "mse"): 1.0, ("mean", "A", "mse"): 3.0, ("fmlp", "A", "mse"): 2.5,
         ("technical_duplicate", "A", "mse"): 3.0}
    out = cal.calibrated_scores(_table(v), SPECS).set_index(["method", "metric", "positive_control"])["calibrated_score"]
    assert out[("fmlp", "pearson_deltactrl", "interpolated_duplicate")] == pytest.approx((0.9 - 0.7) / (0.9 - 0.5))
    assert out[("fmlp", "mse", "interpolated_duplicate")] == pytest.approx((1.0 - 2.5) / (1.0 - 3.0))
    assert out[("mean", "mse", "interpolated_duplicate")] == 1.0
    assert out[("interpolated_duplicate", "mse", "interpolated_duplicate")] == 0.0
    # the technical duplicate ties the mean on mse: no scale, NaN
    assert np.isnan(out[("fmlp", "mse", "technical_duplicate")])


def test_gameability_and_trust_by_hand():
    rng = np.random.default_rng(0)
    v = {}
    for i in range(30):
        p = f"P{i}"
        v |= {("interpolated_duplicate", p, "mse"): 1.0 + rng.normal(0, 0.01), ("mean", p, "mse"): 4.0,
              ("technical_duplicate", p, "mse"): 1.5, ("control", p, "mse"): 5.0,
              ("inflated_delta_x2", p, "mse"): 6.0 + rng.normal(0, 0.01),  # worse than the mean
              ("double_log", p, "mse"): 2.0 + rng.normal(0, 0.01)}  # a trick the metric rewards
    metrics = _table(v)
    gaming = cal.gameability(metrics, SPECS, alpha=0.05)
    g = gaming.set_index("predictor")
    assert not g.loc["inflated_delta_x2", "beats_negative"] and g.loc["double_log", "beats_negative"]
    assert g.loc["double_log", "gap_closed"] == pytest.approx((2.0 - 4.0) / (1.0 - 4.0), abs=0.01)
    assert not g["beats_positive"].any()
    drf = cal.calibration_drf(metrics, SPECS)
    ci = cal.summarize_drf_ci(drf, SPECS, seed=0, n_resamples=200, confidence=0.95, min_perturbations=10)
    bds = cal.bds_table(metrics, SPECS, seed=0, n_permutations=200)
    trust = cal.trust_table(ci, bds, gaming, alpha=0.05).set_index("metric").loc["mse"]
    # DRF ≈ 0.75 with a tight interval, BDS 30/30 — but double_log games it
    assert trust["drf_ok"] and trust["bds_ok"] and trust["gamed_by"] == "double_log" and not trust["trustworthy"]
    clean = cal.gameability(metrics[metrics["method"] != "double_log"], SPECS, alpha=0.05)
    assert cal.trust_table(ci, bds, clean, alpha=0.05).set_index("metric").loc["mse", "trustworthy"]


# --- the algebraic identities marked in the figures -------------------------------------------------------------


def test_drf_identities_hold_numerically():
    rng = np.random.default_rng(0)
    P, G = 40, 300
    control, mean = rng.normal(1, 0.3, G), rng.normal(1, 0.3, G)
    truth = mean + rng.normal(0, 0.5, (P, G)) * rng.random((P, 1))
    weights = rng.random((P, G)) ** 4
    degs = weights > 0.3
    pos = truth + rng.normal(0, 0.3, (P, G))
    neg = np.tile(mean, (P, 1)) + rng.normal(0, 0.1, (P, G))
    scores = {
        name: score_predictions(pred, truth, control, mean, weights, degs, np.arange(P)).pivot(
            index="perturbation", columns="metric", values="value")
        for name, pred in (("pos", pos), ("neg", neg))
    }
    drf = {m: dynamic_range_fraction(scores["pos"][m], scores["neg"][m], m) for m in scores["pos"].columns}
    # the pairs identical by algebra (pairs with identical values, Metric.identical_to, are tested with the panels)
    for metric, twin in DRF_IDENTITIES.items():
        r2_p, r2_n = scores["pos"][metric].to_numpy(), scores["neg"][metric].to_numpy()
        e_p, e_n = scores["pos"][twin].to_numpy(), scores["neg"][twin].to_numpy()
        # Without the DRF's 1e-6 both are (SS_neg − SS_pos) / SS_neg of the same squared errors: equal to rounding.
        np.testing.assert_allclose((r2_p - r2_n) / (1 - r2_n), (e_n - e_p) / e_n, rtol=1e-9)
        # With it they differ by at most 1e-6 over each denominator.
        assert (np.abs(drf[metric] - drf[twin]) <= 1e-6 * (1 / (1 - r2_n) + 1 / e_n)).all()
        assert not np.allclose(drf[metric], drf["pearson_deltactrl"], rtol=1e-2)
    assert set(DRF_IDENTITIES.values()) == {"mse", "wmse"}
    assert SPECS.set_index("metric").loc[list(DRF_IDENTITIES), "drf_identical_to"].tolist() == ["mse", "wmse"]


def test_metric_specs_follow_the_registry():
    assert list(SPECS["metric"]) == list(METRICS)
    spec = SPECS.set_index("metric")
    assert spec.loc["pearson_deltapert", "negative_control"] == "control"
    assert spec.loc["mse", "negative_control"] == "mean" and spec.loc["mse", "perfect"] == 0.0
    assert not spec.loc["wmse", "higher_is_better"] and spec.loc["nir", "higher_is_better"]
