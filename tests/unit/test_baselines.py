"""Baselines against closed forms and hand-worked cases."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertcal.baselines import FoldData, as_prediction, linear_fit, predict_baseline
from pertcal.io import PertcalInputError, write_h5ad

GENES = ["A", "B", "C", "D"]


def fold(means: dict, td: dict | None = None, train=(), test=(), degs_td=None, modality="CRISPRi"):
    m = pd.DataFrame(means, index=GENES).T
    return FoldData(
        means=m,
        td=pd.DataFrame(td or means, index=GENES).T,
        train=list(train),
        test=list(test),
        degs_td=degs_td if degs_td is not None else pd.DataFrame(columns=["perturbation", "gene", "pval_adj"]),
        modality=modality,
    )


MEANS = {"control": [1, 1, 1, 1], "A": [0, 2, 1, 1], "B": [1, 3, 1, 0], "C": [4, 1, 1, 1], "A+B": [0, 5, 1, 0]}


def test_mean_weights_perturbations_equally_and_control():
    d = fold(MEANS, train=["A", "B"], test=["C"])
    np.testing.assert_allclose(predict_baseline("mean", d).loc["C"], [0.5, 2.5, 1, 0.5])
    np.testing.assert_allclose(predict_baseline("control", d).loc["C"], [1, 1, 1, 1])


def test_interpolated_duplicate_alpha_from_known_pvalues():
    td = {**MEANS, "C": [3, 3, 3, 3]}
    degs = pd.DataFrame({"perturbation": ["C"] * 3, "gene": ["A", "B", "C"], "pval_adj": [0.0, 0.25, 1.0]})
    d = fold(MEANS, td=td, train=["A", "B"], test=["C"], degs_td=degs)
    # α = 1 − p: A → 1 (td), B → 0.75, C → 0 (mean), D untested → 0 (mean)
    expected = [3, 0.75 * 3 + 0.25 * 2.5, 1, 0.5]
    np.testing.assert_allclose(predict_baseline("interpolated_duplicate", d).loc["C"], expected)
    np.testing.assert_allclose(predict_baseline("technical_duplicate", d).loc["C"], [3, 3, 3, 3])


def test_additive_and_crispr_informed_mean():
    d = fold(MEANS, train=["A", "B"], test=["A+B"])
    # control + (A − control) + (B − control)
    np.testing.assert_allclose(predict_baseline("additive", d).loc["A+B"], [0, 4, 1, 0])
    np.testing.assert_allclose(predict_baseline("crispr_informed_mean", d).loc["A+B"], [0, 0, 1, 0.5])
    up = fold(MEANS, train=["A", "B"], test=["A+B"], modality="CRISPRa")
    np.testing.assert_allclose(predict_baseline("crispr_informed_mean", up).loc["A+B"], [1, 5, 1, 0.5])


@pytest.mark.parametrize("ridge", [0.0, 0.1])
def test_linear_fit_matches_kronecker_normal_equations(ridge):
    rng = np.random.default_rng(0)
    n_genes, n_perts, k = 12, 7, 3
    y = rng.normal(size=(n_genes, n_perts))
    targets = rng.choice(n_genes, size=n_perts, replace=False)
    g, w, b = linear_fit(y, targets, n_components=k, ridge=ridge)
    np.testing.assert_allclose(b, y.mean(axis=1))
    # G's columns are the top-k principal axes: G Gᵀ spans the same space as sklearn-free SVD of the centred data
    centred = y - b[:, None]
    p = g[targets]
    # vec(G W Pᵀ) = (P ⊗ G) vec(W): for ridge=0 W is the least-squares solution of the Kronecker system,
    # for ridge>0 the product of the two ridge inverses, (PᵀP+λI)⁻¹ ⊗ (GᵀG+λI)⁻¹ (P ⊗ G)ᵀ vec(Y − b).
    kron = np.kron(p, g)
    if ridge == 0:
        expected = np.linalg.lstsq(kron, centred.ravel(order="F"), rcond=None)[0]
    else:
        left = np.kron(np.linalg.inv(p.T @ p + ridge * np.eye(k)), np.linalg.inv(g.T @ g + ridge * np.eye(k)))
        expected = left @ kron.T @ centred.ravel(order="F")
    np.testing.assert_allclose(w.ravel(order="F"), expected, atol=1e-8)
    # top-k PCA scores of genes (columns centred): compare spans with the SVD of the column-centred matrix
    cc = centred - centred.mean(axis=0)
    u = np.linalg.svd(cc, full_matrices=False)[0][:, :k]
    np.testing.assert_allclose(np.abs(g / np.linalg.norm(g, axis=0)), np.abs(u), atol=1e-8)


def test_linear_predicts_recovered_structure_and_falls_back_to_mean():
    rng = np.random.default_rng(1)
    genes = [f"g{i}" for i in range(30)]
    emb = rng.normal(size=(30, 2))
    perts = genes[:20]
    # a rank-2 truth: effect of perturbing gene j on gene i = emb_i · M · emb_j
    m = np.array([[1.0, 0.3], [-0.5, 0.8]])
    means = {p: 2 + emb @ m @ emb[i] for i, p in enumerate(perts)}
    means["control"] = np.full(30, 2.0)
    means["XYZ"] = np.full(30, 5.0)  # target not a selected gene
    d = FoldData(
        means=pd.DataFrame(means, index=genes).T, td=pd.DataFrame(means, index=genes).T,
        train=perts[:16], test=perts[16:] + ["XYZ"], degs_td=pd.DataFrame(), modality="CRISPRi",
    )
    pred = predict_baseline("linear", d, n_components=2, ridge=1e-8)
    truth = pd.DataFrame(means, index=genes).T
    assert np.corrcoef(pred.loc[perts[16:]].to_numpy().ravel(), truth.loc[perts[16:]].to_numpy().ravel())[0, 1] > 0.9
    np.testing.assert_allclose(pred.loc["XYZ"], truth.loc[perts[:16]].mean(axis=0))


def test_additive_names_combos_missing_a_single(caplog, tmp_path):
    d = fold(MEANS, train=["A", "B"], test=["A+B", "A+Z"])
    with caplog.at_level("WARNING", logger="pertcal.baselines"):
        pred = predict_baseline("additive", d)
    # Z is absent: A+Z gets A's effect only, and says so in the log and in the written file
    np.testing.assert_allclose(pred.loc["A+Z"], [0, 2, 1, 1])
    assert "1 of 2 test combos" in caplog.text and "A+Z: missing Z" in caplog.text and "A+B" not in caplog.text
    path = tmp_path / "additive.h5ad"
    write_h5ad(as_prediction(pred, method="additive", dataset="ds", task="combo", fold=0), path)
    assert list(ad.read_h5ad(path).uns["incomplete_combos"]) == ["A+Z: missing Z"]
    complete = predict_baseline("additive", fold(MEANS, train=["A", "B"], test=["A+B"]))
    assert "incomplete_combos" not in as_prediction(complete, method="additive", dataset="ds", task="combo", fold=0).uns


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_prediction_with_nan_or_inf_is_refused_and_not_written(tmp_path, bad):
    pred = predict_baseline("mean", fold(MEANS, train=["A", "B"], test=["C", "A+B"]))
    pred.loc["A+B", "D"] = bad
    path = tmp_path / "mean.h5ad"
    with pytest.raises(PertcalInputError) as err:
        write_h5ad(as_prediction(pred, method="mean", dataset="ds", task="single", fold=3), path)
    message = str(err.value)
    assert "method 'mean', dataset 'ds', task single, fold 3" in message
    assert "1 of 2 test perturbations (A+B)" in message and "nothing written" in message
    assert list(tmp_path.iterdir()) == []
