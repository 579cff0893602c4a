"""pertcal.metrics against scipy.stats.pearsonr, sklearn's r2_score, scipy's cdist and cases worked by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import cdist
from sklearn.metrics import r2_score

from pertcal import metrics
from pertcal.metrics import METRICS, score_predictions

NAMES = [
    "mse", "wmse", "pearson_deltactrl", "pearson_deltactrl_degs", "pearson_deltapert", "pearson_deltapert_degs",
    "r2_deltactrl", "r2_deltactrl_degs", "r2_deltapert", "r2_deltapert_degs",
    "weighted_r2_deltactrl", "weighted_r2_deltapert", "nir",
]


def _wide(table):
    return table.pivot(index="perturbation", columns="metric", values="value")


@pytest.fixture(scope="module")
def fold():
    rng = np.random.default_rng(0)
    P, G = 6, 40
    control = rng.gamma(2.0, 0.5, G)
    mean = control + rng.normal(0, 0.1, G)
    truth = mean + rng.normal(0, 0.3, (P, G))
    pred = truth + rng.normal(0, 0.3, (P, G))
    weights = rng.random((P, G)) ** 2
    weights[2, :] = 0.0
    deg_mask = rng.random((P, G)) < 0.4
    deg_mask[3, :] = False
    deg_mask[3, :2] = True  # two DEGs: too few
    names = [f"p{i}" for i in range(P)]
    return pred, truth, control, mean, weights, deg_mask, names


def _reference(pred, truth, control, mean, weights, deg_mask):
    """Per-perturbation scipy / sklearn / numpy loop, one metric at a time."""
    P = len(truth)
    d = cdist(pred, truth)
    rows = []
    for i in range(P):
        p, t, w, m = pred[i], truth[i], weights[i], deg_mask[i]
        row = {"mse": np.mean((p - t) ** 2)}
        row["wmse"] = np.sum(w * (p - t) ** 2) / np.sum(w) if w.sum() > 0 else np.nan
        for ref_name, ref in (("deltactrl", control), ("deltapert", mean)):
            dp, dt = p - ref, t - ref
            row[f"pearson_{ref_name}"] = sps.pearsonr(dp, dt).statistic
            row[f"r2_{ref_name}"] = r2_score(dt, dp)
            enough = m.sum() >= 3
            row[f"pearson_{ref_name}_degs"] = sps.pearsonr(dp[m], dt[m]).statistic if enough else np.nan
            row[f"r2_{ref_name}_degs"] = r2_score(dt[m], dp[m]) if enough else np.nan
            row[f"weighted_r2_{ref_name}"] = r2_score(dt, dp, sample_weight=w) if w.sum() > 0 else np.nan
        row["nir"] = np.mean([d[i, i] < d[i, j] for j in range(P) if j != i])
        rows.append(row)
    return pd.DataFrame(rows)


def test_registry_names_order_and_directions():
    assert metrics.panel_metrics() == NAMES == list(METRICS)[:13]
    paper = {n: METRICS[n] for n in NAMES}
    assert [n for n, m in paper.items() if not m.higher_is_better] == ["mse", "wmse"]
    assert all(METRICS[n].perfect == (0.0 if n in ("mse", "wmse") else 1.0) for n in NAMES)
    assert [n for n, m in paper.items() if m.reference == "pert"] == [
        "pearson_deltapert", "pearson_deltapert_degs", "r2_deltapert", "r2_deltapert_degs", "weighted_r2_deltapert",
    ]


@pytest.mark.parametrize("block_values", [None, 80])  # 80 values: blocks of 2 rows of 40 genes
def test_every_metric_matches_reference_loop(fold, block_values, monkeypatch):
    if block_values:
        monkeypatch.setattr(metrics, "_BLOCK_VALUES", block_values)
    out = score_predictions(*fold)
    assert list(out.columns) == ["perturbation", "metric", "value"]
    assert list(out["metric"].iloc[:13]) == NAMES
    assert list(out["perturbation"].unique()) == fold[-1]
    got = _wide(out).loc[fold[-1], NAMES]
    ref = _reference(*fold[:-1])[NAMES]
    np.testing.assert_allclose(got.to_numpy(), ref.to_numpy(), rtol=1e-10, atol=1e-12, equal_nan=True)
    assert np.isnan(got.loc["p2", "wmse"]) and np.isnan(got.loc["p2", "weighted_r2_deltactrl"])
    assert got.loc["p3", ["pearson_deltactrl_degs", "r2_deltapert_degs"]].isna().all()
    assert got.drop(index=["p2", "p3"]).notna().all().all()


def test_hand_checked_example():
    # Two perturbations, three genes, control 0, mean baseline (1, 1, 1), every gene a DEG.
    truth = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    pred = np.array([[1.0, 2.0, 4.0], [3.0, 2.0, 1.0]])
    weights = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    out = _wide(score_predictions(pred, truth, np.zeros(3), np.ones(3), weights, np.ones((2, 3), bool), ["a", "b"]))
    a, b = out.loc["a"], out.loc["b"]
    assert a["mse"] == pytest.approx(1 / 3)
    assert a["wmse"] == pytest.approx(1.0)
    # Δctrl: pred (1,2,4) vs truth (1,2,3): r = 3/sqrt(2*4.6667)... = 0.9819805, R² = 1 − 1/2 = 0.5.
    assert a["pearson_deltactrl"] == pytest.approx(3 / np.sqrt(2 * 14 / 3))
    assert a["r2_deltactrl"] == pytest.approx(0.5)
    # Δpert: pred (0,1,3) vs truth (0,1,2): same correlation and R² (shifts of both sides).
    assert a["pearson_deltapert"] == pytest.approx(a["pearson_deltactrl"])
    assert a["r2_deltapert"] == pytest.approx(0.5)
    # Only gene 3 weighted: the truth is constant on it and the prediction misses -> sklearn's 0.0.
    assert a["weighted_r2_deltactrl"] == 0.0
    assert b["mse"] == 0 and b["wmse"] == 0 and b["r2_deltactrl"] == 1.0 and b["pearson_deltapert"] == pytest.approx(1)
    # NIR: D(a,a) = 1 < D(a,b) = sqrt(4 + 0 + 9); D(b,b) = 0 < D(b,a).
    assert a["nir"] == 1.0 and b["nir"] == 1.0


def test_nir_three_perturbations_by_hand():
    truth = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    pred = np.array([[1.5, 0.0], [2.0, 0.5], [1.0, 1.0]])
    # Row 0: D00 = 1.5, D01 = 0.5, D02 = 2.5      -> 1 of 2 farther -> 0.5
    # Row 1: D11 = 0.5, D10 = 2.06, D12 = 2.5     -> 2 of 2         -> 1.0
    # Row 2: D22 = 1.41, D20 = 1.41, D21 = 1.41   -> ties count as not closer -> 0.0
    out = _wide(score_predictions(pred, truth, np.zeros(2), np.zeros(2), np.ones((3, 2)), np.ones((3, 2), bool), list("xyz")))
    np.testing.assert_array_equal(out.loc[list("xyz"), "nir"], [0.5, 1.0, 0.0])


def test_nir_exact_duplicate_truths_tie():
    rng = np.random.default_rng(5)
    truth = rng.normal(5.0, 1.0, (50, 300))
    truth[7] = truth[3]
    pred = truth + rng.normal(0, 0.5, truth.shape)
    out = _wide(score_predictions(pred, truth, np.zeros(300), np.zeros(300), np.ones((50, 300)), np.ones((50, 300), bool), [f"p{i:02d}" for i in range(50)]))
    d = cdist(pred, truth)
    expected = [np.mean([d[i, i] < d[i, j] for j in range(50) if j != i]) for i in range(50)]
    np.testing.assert_array_equal(out["nir"].to_numpy(), expected)
    assert out["nir"].iloc[3] == pytest.approx(48 / 49)


def test_nan_rules():
    G = 5
    truth = np.array([[1.0, 2.0, 0.5, 0.2, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    pred = np.array([[0.7, 0.7, 0.7, 0.7, 0.7], [1.0, 1.0, 1.0, 1.0, 1.0]])
    mask = np.array([[True, True, False, False, False], [True, True, True, False, False]])
    out = _wide(score_predictions(pred, truth, np.zeros(G), np.full(G, 0.7), np.zeros((2, G)), mask, ["a", "b"]))
    a, b = out.loc["a"], out.loc["b"]
    # Constant prediction: Pearson undefined (scipy gives NaN); fewer than 3 DEGs: NaN; all weights 0: NaN.
    assert np.isnan(a["pearson_deltactrl"]) and np.isnan(a["pearson_deltapert"])
    with pytest.warns(sps.ConstantInputWarning):
        assert np.isnan(sps.pearsonr(pred[0], truth[0]).statistic)
    assert np.isnan(a["pearson_deltactrl_degs"]) and np.isnan(a["r2_deltactrl_degs"])
    assert np.isnan(a["wmse"]) and np.isnan(a["weighted_r2_deltactrl"]) and np.isnan(a["weighted_r2_deltapert"])
    # Constant truth predicted perfectly: sklearn gives 1.0; Pearson stays NaN.
    assert b["r2_deltactrl"] == r2_score(truth[1], pred[1]) == 1.0
    assert b["r2_deltactrl_degs"] == 1.0 and np.isnan(b["pearson_deltactrl_degs"])
    # Constant truth missed: sklearn gives 0.0 (force_finite).
    off = _wide(score_predictions(pred[[1]] + 0.5, truth[[1]], np.zeros(G), np.zeros(G), np.ones((1, G)), mask[[1]], ["b"]))
    assert off.loc["b", "r2_deltactrl"] == r2_score(truth[1], pred[1] + 0.5) == 0.0
    assert np.isnan(off.loc["b", "nir"])  # a single perturbation has nothing to rank against


def test_shape_mismatch_raises(fold):
    pred, truth, control, mean, weights, deg_mask, names = fold
    with pytest.raises(ValueError, match="deg_mask"):
        score_predictions(pred, truth, control, mean, weights, deg_mask[:, :-1], names)
