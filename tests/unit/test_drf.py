"""pertcal.drf on cases worked by hand and against scPertEval's own `drf` calibrator."""

import numpy as np
import pandas as pd
import pytest

from pertcal.drf import compute_drf, dynamic_range_fraction
from pertcal.io import PertcalInputError
from pertcal.metrics import metric_specs


def test_higher_is_better_by_hand():
    # (0.8 − 0.2) / (1 − 0.2 + 1e-6); a positive control worse than the negative is negative.
    got = dynamic_range_fraction(np.array([0.8, 0.1]), np.array([0.2, 0.3]), "pearson_deltactrl")
    np.testing.assert_allclose(got, [0.6 / (0.8 + 1e-6), -0.2 / (0.7 + 1e-6)], rtol=1e-14)


def test_lower_is_better_by_hand():
    # (neg − pos) / (neg + 1e-6): 2 → 0.5 closes 75% of the range to the perfect 0.
    got = dynamic_range_fraction(np.array([0.5, 3.0]), np.array([2.0, 2.0]), "mse")
    np.testing.assert_allclose(got, [1.5 / (2.0 + 1e-6), -1.0 / (2.0 + 1e-6)], rtol=1e-14)


def test_clipped_and_nan():
    # r2 of the negative control at −9: (1 − (−9))/(1 + 9) = 1; positive at −100 gives −91/10 → −1.
    got = dynamic_range_fraction(np.array([1.0, -100.0, np.nan, 0.5]), np.array([-9.0, -9.0, 0.1, np.nan]), "r2_deltactrl")
    assert got[0] == pytest.approx(10 / (10 + 1e-6))
    assert got[1] == -1.0
    assert np.isnan(got[2]) and np.isnan(got[3])
    assert dynamic_range_fraction(np.array([5.0]), np.array([0.0]), "mse")[0] == -1.0


def _long(values):
    """values: {(method, perturbation, metric): value} → the collected metrics table of one dataset/task/fold."""
    return pd.DataFrame(
        [
            {"dataset": "d", "task": "single", "fold": 0, "method": m, "perturbation": p, "metric": k, "value": v}
            for (m, p, k), v in values.items()
        ]
    )


def test_compute_drf_negative_control_switch_and_nan_skipping():
    v = {}
    for p in ("B", "A"):
        v |= {
            ("mean", p, "pearson_deltactrl"): 0.5,
            ("control", p, "pearson_deltactrl"): 0.9,  # must be ignored for Δctrl
            ("mean", p, "pearson_deltapert"): np.nan,  # the mean baseline's Δpert: constant 0, Pearson undefined
            ("control", p, "pearson_deltapert"): 0.2,
            ("technical_duplicate", p, "pearson_deltactrl"): 0.7,
            ("technical_duplicate", p, "pearson_deltapert"): 0.6,
            ("interpolated_duplicate", p, "pearson_deltapert"): 0.8,
            ("mean", p, "mse"): 2.0,
            ("technical_duplicate", p, "mse"): 1.0,
            ("interpolated_duplicate", p, "mse"): 0.5,
            ("linear", p, "mse"): 0.1,  # other methods play no part
        }
    v[("interpolated_duplicate", "A", "pearson_deltactrl")] = 0.9
    v[("interpolated_duplicate", "B", "pearson_deltactrl")] = np.nan
    v[("mean", "A", "extra_metric")] = 1.0  # not in the registry
    out = compute_drf(_long(v))

    assert list(out.columns) == ["dataset", "task", "perturbation", "metric", "positive_control", "drf"]
    got = out.set_index(["perturbation", "metric", "positive_control"])["drf"]
    e = 1e-6
    assert got[("A", "pearson_deltactrl", "interpolated_duplicate")] == pytest.approx(0.4 / (0.5 + e))
    assert got[("A", "pearson_deltactrl", "technical_duplicate")] == pytest.approx(0.2 / (0.5 + e))
    assert ("B", "pearson_deltactrl", "interpolated_duplicate") not in got.index
    # Δpert: negative control is `control` (0.2), not the NaN mean.
    assert got[("A", "pearson_deltapert", "interpolated_duplicate")] == pytest.approx(0.6 / (0.8 + e))
    assert got[("B", "pearson_deltapert", "technical_duplicate")] == pytest.approx(0.4 / (0.8 + e))
    assert got[("A", "mse", "interpolated_duplicate")] == pytest.approx(1.5 / (2.0 + e))
    assert got[("A", "mse", "technical_duplicate")] == pytest.approx(1.0 / (2.0 + e))
    assert "extra_metric" not in set(out["metric"])
    # Sorted by perturbation, then registry metric order, then primary positive control first.
    assert list(out["perturbation"]) == ["A"] * 6 + ["B"] * 5
    assert list(out["metric"].iloc[:6]) == ["mse"] * 2 + ["pearson_deltactrl"] * 2 + ["pearson_deltapert"] * 2
    assert list(out["positive_control"].iloc[:2]) == ["interpolated_duplicate", "technical_duplicate"]


def test_compute_drf_aligns_by_key_not_position():
    v = {
        ("mean", "A", "mse"): 4.0, ("mean", "B", "mse"): 1.0,
        ("control", "A", "mse"): 9.0, ("control", "B", "mse"): 9.0,
        ("technical_duplicate", "B", "mse"): 0.5, ("technical_duplicate", "A", "mse"): 1.0,
        ("interpolated_duplicate", "A", "mse"): 2.0, ("interpolated_duplicate", "B", "mse"): 0.25,
    }
    table = _long(v).sample(frac=1.0, random_state=3)
    got = compute_drf(table).set_index(["perturbation", "positive_control"])["drf"]
    assert got[("A", "technical_duplicate")] == pytest.approx(3.0 / (4.0 + 1e-6))
    assert got[("B", "technical_duplicate")] == pytest.approx(0.5 / (1.0 + 1e-6))
    assert got[("A", "interpolated_duplicate")] == pytest.approx(2.0 / (4.0 + 1e-6))
    assert got[("B", "interpolated_duplicate")] == pytest.approx(0.75 / (1.0 + 1e-6))


def test_compute_drf_rejects_missing_method_and_duplicates():
    v = {("mean", "A", "mse"): 1.0, ("technical_duplicate", "A", "mse"): 0.5, ("interpolated_duplicate", "A", "mse"): 0.5}
    with pytest.raises(PertcalInputError, match="control"):
        compute_drf(_long(v))
    table = _long(v | {("control", "A", "mse"): 2.0})
    with pytest.raises(PertcalInputError, match="duplicate"):
        compute_drf(pd.concat([table, table.iloc[[0]]]))


def test_each_positive_control_has_its_own_drf_where_its_own_scores_are_defined():
    # pertcal's bookkeeping (docs/method.md, "Departures"): the published loop iterated over the technical
    # duplicate's scores, so it dropped the interpolated duplicate's DRF wherever the td score was NaN. Here the
    # interpolated DRF of A stands on the interpolated and negative scores alone.
    v = {
        ("mean", "A", "mse"): 2.0, ("control", "A", "mse"): 3.0,
        ("technical_duplicate", "A", "mse"): np.nan, ("interpolated_duplicate", "A", "mse"): 0.5,
    }
    got = compute_drf(_long(v)).set_index(["perturbation", "metric", "positive_control"])["drf"]
    assert got[("A", "mse", "interpolated_duplicate")] == pytest.approx(1.5 / (2.0 + 1e-6))
    assert ("A", "mse", "technical_duplicate") not in got.index


def test_nir_is_scored_and_has_drf_rows():
    # The published calibration script never computed NIR (it set run_centroid_analysis where its code read
    # run_nir_analysis); here NIR is a metric like the others, from scoring to the DRF table.
    from pertcal.metrics import score_predictions

    rng = np.random.default_rng(0)
    P, G = 12, 20
    truth = rng.normal(size=(P, G))
    control, mean = rng.normal(size=G), truth.mean(axis=0)
    weights, mask = rng.uniform(size=(P, G)), rng.uniform(size=(P, G)) < 0.5
    perts = [f"p{i}" for i in range(P)]
    preds = {
        "mean": np.tile(mean, (P, 1)), "control": np.tile(control, (P, 1)),
        "technical_duplicate": truth + rng.normal(0, 0.3, (P, G)), "interpolated_duplicate": truth + rng.normal(0, 0.2, (P, G)),
    }
    tables = [
        score_predictions(x, truth, control, mean, weights, mask, perts).assign(
            dataset="d", task="single", fold=0, method=method)
        for method, x in preds.items()
    ]
    drf = compute_drf(pd.concat(tables, ignore_index=True))
    nir = drf[drf["metric"] == "nir"]
    assert len(nir) == 2 * P and nir["drf"].notna().all()
    # the mean baseline predicts one profile for all, so its NIR is 0 or ~0; a near-truth positive control gains
    assert (nir["drf"] > 0).mean() > 0.9

def test_drf_follows_a_spec_table_with_other_perfect_values():
    # a lower-is-better metric whose perfect value is 1, and a higher-is-better one whose perfect value is 10
    specs = pd.DataFrame({"metric": ["offset_error", "score10"], "higher_is_better": [False, True], "perfect": [1.0, 10.0]})
    np.testing.assert_allclose(dynamic_range_fraction(np.array([2.0]), np.array([5.0]), "offset_error", specs),
                               [3.0 / (4.0 + 1e-6)], rtol=1e-14)
    np.testing.assert_allclose(dynamic_range_fraction(np.array([8.0]), np.array([6.0]), "score10", specs),
                               [2.0 / (4.0 + 1e-6)], rtol=1e-14)


# --- scPertEval's `drf` calibrator as an independent reference ----------------------------------------------------


def _scperteval_per_perturbation(name: str, metric: str, pos, neg) -> np.ndarray:
    """scPertEval 0.2.0's calibrator `name` combined per perturbation, with the metric's direction and perfect value."""
    calibrators = pytest.importorskip("scperteval.calibrators")
    from scperteval.protocols.metrics import pearson
    from scperteval.types import Protocol

    spec = metric_specs().set_index("metric").loc[metric]
    protocol = Protocol(name=metric, metric=pearson, representation="centroid",
                        better="higher" if spec.higher_is_better else "lower", perfect=float(spec.perfect))
    combine = calibrators.CALIBRATORS[name].per_pert
    return np.array([combine({"positive": a, "negative": b}, protocol) for a, b in zip(pos, neg)])


def test_drf_equals_scperteval_drf_calibrator():
    from pertcal.calibration import summarize_drf_ci

    calibrators = pytest.importorskip("scperteval.calibrators")
    rng = np.random.default_rng(4)
    P = 40
    draws = {  # (negative, positive) per metric, with a clipped tail and ties
        "pearson_deltactrl": (rng.uniform(-0.5, 0.95, P), rng.uniform(-0.9, 1.0, P)),
        "mse": (rng.exponential(1.0, P), rng.exponential(0.6, P)),
        "r2_deltactrl": (-rng.exponential(8.0, P), 1 - rng.exponential(3.0, P)),
        "pearson_deltapert": (rng.uniform(-0.5, 0.9, P), rng.uniform(-0.5, 1.0, P)),
        "rmse_rank": (rng.uniform(0, 1, P), rng.uniform(0, 1, P)),
    }
    for neg, pos in draws.values():
        pos[:3] = neg[:3]  # ties: DRF 0
    pos_nan = draws["mse"][1]
    pos_nan[5] = np.nan  # undefined on one perturbation: skipped by both
    rows = []
    for metric, (neg, pos) in draws.items():
        negative = "control" if metric == "pearson_deltapert" else "mean"
        for i in range(P):
            for method, value in ((negative, neg[i]), ("interpolated_duplicate", pos[i]), ("technical_duplicate", pos[i])):
                rows.append(dict(dataset="d", task="single", fold=0, method=method, perturbation=f"p{i:02d}",
                                 metric=metric, value=value))
            other = "mean" if negative == "control" else "control"
            rows.append(dict(dataset="d", task="single", fold=0, method=other, perturbation=f"p{i:02d}", metric=metric,
                             value=0.0))
    specs = metric_specs()
    drf = compute_drf(pd.DataFrame(rows), specs)
    drf = drf[drf["positive_control"] == "interpolated_duplicate"]
    summary = summarize_drf_ci(drf.assign(negative_control="mean"), specs, seed=0, n_resamples=100, confidence=0.9,
                               min_perturbations=1).set_index("metric")
    for metric, (neg, pos) in draws.items():
        theirs = _scperteval_per_perturbation("drf", metric, pos, neg)
        ours = drf[drf["metric"] == metric].set_index("perturbation")["drf"].reindex([f"p{i:02d}" for i in range(P)])
        np.testing.assert_array_equal(ours.to_numpy(), theirs, err_msg=metric)
        aggregate = calibrators.CALIBRATORS["drf"].aggregate(theirs)
        assert summary.loc[metric, "mean_drf"] == pytest.approx(aggregate["mean"], rel=1e-12)
    assert (drf["drf"] == -1.0).any() and (drf["drf"] == 0.0).any()  # clipping and ties were exercised


def test_drf_differs_from_scperteval_only_beyond_perfect():
    # A negative control scoring beyond the perfect value (a correlation above 1): scPertEval returns NaN, pertcal
    # keeps the formula (clipped). No registered metric can go beyond its perfect value (docs/method.md).
    pos, neg = np.array([0.9, 0.5]), np.array([1.2, 0.4])
    theirs = _scperteval_per_perturbation("drf", "pearson_deltactrl", pos, neg)
    ours = dynamic_range_fraction(pos, neg, "pearson_deltactrl")
    assert np.isnan(theirs[0]) and ours[0] == 1.0  # (0.9 − 1.2) / (1 − 1.2 + 1e-6) > 1, clipped
    assert ours[1] == theirs[1]
