"""Baselines against closed forms and hand-worked cases; what each reads from the files, matched by name."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertcal.baselines import BASELINES, CALIBRATION_CONTROLS, READS, FoldData, as_prediction, fold_data, linear_fit, predict_baseline, read_baseline_inputs
from pertcal.degs import test_degs
from pertcal.evaluate import read_scoring_inputs, score_fold
from pertcal.io import PertcalInputError, write_h5ad
from pertcal.reduce import reduce_file
from pertcal.split import split_halves

GENES = ["A", "B", "C", "D"]


def fold(means: dict, td: dict | None = None, train=(), test=(), degs_td=None, modality="CRISPRi"):
    m = pd.DataFrame(means, index=GENES).T
    return FoldData(
        means=m,
        td=pd.DataFrame(td or means, index=GENES).T,
        train=list(train),
        test=list(test),
        degs_td=degs_td,
        modality=modality,
    )


MEANS = {"control": [1, 1, 1, 1], "A": [0, 2, 1, 1], "B": [1, 3, 1, 0], "C": [4, 1, 1, 1], "A+B": [0, 5, 1, 0]}


def test_mean_weights_perturbations_equally_and_control():
    d = fold(MEANS, train=["A", "B"], test=["C"])
    np.testing.assert_allclose(predict_baseline("mean", d).loc["C"], [0.5, 2.5, 1, 0.5])
    np.testing.assert_allclose(predict_baseline("control", d).loc["C"], [1, 1, 1, 1])


def test_interpolated_duplicate_alpha_from_known_pvalues():
    td = {**MEANS, "C": [3, 3, 3, 3]}
    # genes in another order than the means' and D untested: α is matched by gene name
    degs = ad.AnnData(
        obs=pd.DataFrame({"perturbation": ["C"]}, index=["C"]), var=pd.DataFrame(index=["C", "A", "B"]),
        layers={"pval_adj": np.array([[1.0, 0.0, 0.25]], dtype=np.float32)},
    )
    d = fold(MEANS, td=td, train=["A", "B"], test=["C"], degs_td=degs)
    # α = 1 − p: A → 1 (td), B → 0.75, C → 0 (mean), D untested → 0 (mean)
    expected = [3, 0.75 * 3 + 0.25 * 2.5, 1, 0.5]
    np.testing.assert_allclose(predict_baseline("interpolated_duplicate", d).loc["C"], expected)
    np.testing.assert_allclose(predict_baseline("technical_duplicate", d).loc["C"], [3, 3, 3, 3])


def test_mean_loo_by_hand():
    # every perturbation of the folds file but the test one, each weighted equally; the control plays no part
    d = FoldData(means=pd.DataFrame(MEANS, index=GENES).T, td=pd.DataFrame(MEANS, index=GENES).T, train=["A", "B"],
                 test=["C", "A+B"], degs_td=None, modality="CRISPRi", val=[])
    pred = predict_baseline("mean_loo", d)
    np.testing.assert_allclose(pred.loc["C"], np.mean([MEANS[p] for p in ("A", "B", "A+B")], axis=0))
    np.testing.assert_allclose(pred.loc["A+B"], np.mean([MEANS[p] for p in ("A", "B", "C")], axis=0))


def test_gaming_predictors_by_hand():
    td = {**MEANS, "C": [3, 3, 3, 3], "A+B": [2, 2, 2, 2]}
    d = fold(MEANS, td=td, train=["A", "B"], test=["C", "A+B"])
    # mean = [0.5, 2.5, 1, 0.5], control = 1: mean − control = [−0.5, 1.5, 0, −0.5]
    np.testing.assert_allclose(predict_baseline("inflated_delta_x2", d).loc["C"], [0, 4, 1, 0])
    np.testing.assert_allclose(predict_baseline("inflated_delta_x5", d).loc["A+B"], [-1.5, 8.5, 1, -1.5])
    np.testing.assert_allclose(predict_baseline("global_shift", d).loc["C"], [1.125] * 4)
    np.testing.assert_allclose(predict_baseline("double_log", d).loc["C"], np.log1p([0.5, 2.5, 1, 0.5]))
    # the td profile of the other test perturbation, never its own
    shuffled = predict_baseline("shuffled_truth", d)
    np.testing.assert_allclose(shuffled.loc["C"], td["A+B"])
    np.testing.assert_allclose(shuffled.loc["A+B"], td["C"])
    one = fold(MEANS, td=td, train=["A", "B"], test=["C"])
    np.testing.assert_allclose(predict_baseline("shuffled_truth", one).loc["C"], MEANS["A"])


def test_random_delta_variance_from_training_shifts():
    # genes C (no shift in any train perturbation) and D get sd 0 and 1/√2: the noise follows the train shifts
    d = fold(MEANS, train=["A", "B"], test=[f"T{i}" for i in range(4000)])
    pred = predict_baseline("random_delta", d, seed=3)
    np.testing.assert_array_equal(pred, predict_baseline("random_delta", d, seed=3))
    noise = pred.to_numpy() - 1.0
    sd = pd.DataFrame(MEANS, index=GENES).T.loc[["A", "B"]].sub(MEANS["control"]).std(ddof=1).to_numpy()
    assert (noise[:, 2] == 0).all()
    np.testing.assert_allclose(noise.std(axis=0), sd, rtol=0.05)
    assert abs(noise.mean()) < 0.02


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
    g, w, b = linear_fit(y, np.arange(n_perts), targets, n_components=k, ridge=ridge)
    np.testing.assert_allclose(b, y.mean(axis=1))
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


def _linear_by_the_formula(means: pd.DataFrame, train: list[str], test: list[str], k: int, lam: float) -> pd.DataFrame:
    """Ahlmann-Eltze's linear model transcribed from docs/method.md with sklearn's PCA, independent of pertcal."""
    from sklearn.decomposition import PCA

    singles = [p for p in train if "+" not in p]
    pca = PCA(n_components=k, svd_solver="full").fit(means.loc[singles])  # perturbations × genes
    G = pd.DataFrame(pca.components_.T, index=means.columns)  # genes × K
    measured = [p for p in singles if p in G.index]
    Y = means.loc[measured].T.to_numpy()  # genes × measured train perturbations
    b = Y.mean(axis=1, keepdims=True)
    P = G.loc[measured].to_numpy()
    Gm = G.to_numpy()
    I = np.eye(k)
    W = np.linalg.inv(Gm.T @ Gm + lam * I) @ Gm.T @ (Y - b) @ P @ np.linalg.inv(P.T @ P + lam * I)
    out = {p: (Gm @ W @ G.loc[p].to_numpy() + b[:, 0]) if p in G.index else b[:, 0] for p in test}
    return pd.DataFrame(out, index=means.columns).T


@pytest.mark.parametrize("ridge", [0.1, 3.0])
def test_linear_equals_sklearn_pca_transcription_of_the_formula(ridge):
    rng = np.random.default_rng(7)
    genes = [f"g{i}" for i in range(40)]
    # train singles: most target a read-out gene, two do not (they shape G, not W or b); a combo is ignored
    train = genes[:22] + ["OUT1", "OUT2", "g0+g1"]
    test = genes[22:30] + ["OUT3"]
    base = rng.gamma(2.0, 1.0, 40)
    means = pd.DataFrame(base + rng.normal(0, 0.5, (len(train) + len(test), 40)), index=train + test, columns=genes)
    d = FoldData(means=means, td=means, train=train, test=test, degs_td=None, modality="CRISPRi")
    ours = predict_baseline("linear", d, n_components=5, ridge=ridge)
    expected = _linear_by_the_formula(means, train, test, 5, ridge)
    pd.testing.assert_frame_equal(ours, expected.loc[ours.index], check_exact=False, rtol=1e-10, atol=1e-12)
    # the embedding is unscaled (orthonormal loadings), so λ matters: a scores-based G would give other predictions
    assert not np.allclose(ours, predict_baseline("linear", d, n_components=5, ridge=ridge * 10))


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
        train=perts[:16], test=perts[16:] + ["XYZ"], degs_td=None, modality="CRISPRi",
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


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    """stats.h5ad, folds and the td/gt DEG matrix files (and copies with shuffled perturbation rows) of a small screen."""
    tmp = tmp_path_factory.mktemp("screen")
    rng = np.random.default_rng(5)
    genes = [f"g{j}" for j in range(30)]
    perts = genes[:14]
    labels = np.repeat(["control", *perts], [60] + [18] * len(perts))
    effect = np.exp(rng.normal(0, 0.5, (len(perts) + 1, len(genes))))
    group = np.repeat(np.arange(len(perts) + 1), [60] + [18] * len(perts))
    x = np.log1p(rng.poisson(2.0 * effect[group]) * rng.uniform(0.5, 2, (labels.size, 1)))
    cells = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(labels.size)]),
                       var=pd.DataFrame(index=genes))
    cells.write_h5ad(tmp / "cells.h5ad")
    stats = reduce_file(tmp / "cells.h5ad", split_halves(cells.obs["perturbation"], seed=0), dataset="d",
                        chunk_nonzeros=1000)
    stats.write_h5ad(tmp / "stats.h5ad")
    folds = pd.DataFrame({"perturbation": perts, "fold": 0, "split": ["train"] * 9 + ["val"] + ["test"] * 4})
    paths = {"stats": tmp / "stats.h5ad"}
    for half in ("gt", "td"):
        matrix = test_degs(stats, half)
        matrix.write_h5ad(tmp / f"degs_{half}.h5ad")
        matrix[rng.permutation(matrix.n_obs)].copy().write_h5ad(tmp / f"degs_{half}_shuffled.h5ad")
        paths[half], paths[f"{half}_shuffled"] = tmp / f"degs_{half}.h5ad", tmp / f"degs_{half}_shuffled.h5ad"
    return stats, folds, paths


@pytest.mark.parametrize("method", sorted(BASELINES) + sorted(CALIBRATION_CONTROLS))
def test_baselines_from_their_reads_equal_the_whole_files_and_ignore_matrix_row_order(screen, method):
    stats, folds, paths = screen
    seeded = {"seed": 0} if method == "random_delta" else {}
    whole = predict_baseline(method, fold_data(stats, folds, 0, degs_td=ad.read_h5ad(paths["td"]), modality="CRISPRi"), **seeded)
    for td in (paths["td"], paths["td_shuffled"]):
        part, degs_td = read_baseline_inputs(method, paths["stats"], folds, 0, td)
        assert (degs_td is not None) == READS[method].degs_td
        pred = predict_baseline(method, fold_data(part, folds, 0, degs_td=degs_td, modality="CRISPRi"), **seeded)
        pd.testing.assert_frame_equal(pred, whole)


def test_baselines_read_only_the_rows_they_use(screen):
    _, folds, paths = screen
    part, degs_td = read_baseline_inputs("control", paths["stats"], folds, 0)
    assert set(part.obs["perturbation"].astype(str)) == {"control"} and list(part.layers) == ["sum"] and degs_td is None
    part, degs_td = read_baseline_inputs("interpolated_duplicate", paths["stats"], folds, 0, paths["td"])
    test = folds.loc[folds["split"] == "test", "perturbation"]
    assert sorted(degs_td.obs_names) == sorted(test) and list(degs_td.layers) == ["pval_adj"]


def test_scores_ignore_matrix_row_order(screen):
    stats, folds, paths = screen
    d = fold_data(stats, folds, 0, degs_td=ad.read_h5ad(paths["td"]), modality="CRISPRi")
    prediction = as_prediction(predict_baseline("interpolated_duplicate", d), method="m", dataset="x", task="single", fold=0)
    whole = score_fold(prediction, stats, folds, 0, ad.read_h5ad(paths["gt"]), deg_alpha=0.05)
    assert whole["value"].notna().any()
    for gt in (paths["gt"], paths["gt_shuffled"]):
        part, degs_gt = read_scoring_inputs(paths["stats"], gt, folds, 0)
        pd.testing.assert_frame_equal(score_fold(prediction, part, folds, 0, degs_gt, deg_alpha=0.05), whole)


def test_additive_uses_all_control_cells_in_every_fold(tmp_path):
    # pertcal's choice (docs/method.md): control = mean of ALL control cells (both halves), the same in both folds;
    # the published code used fold 0's training control cells for both folds.
    rng = np.random.default_rng(11)
    labels = np.repeat(["control", "A", "B", "C", "A+B", "A+C"], [40, 12, 12, 12, 10, 10])
    x = np.log1p(rng.poisson(3.0, (labels.size, 6)) * rng.uniform(0.5, 2, (labels.size, 1))).astype(np.float32)
    cells = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(labels.size)]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(6)]))
    x = x.astype(np.float64)
    cells.write_h5ad(tmp_path / "cells.h5ad")
    stats = reduce_file(tmp_path / "cells.h5ad", split_halves(cells.obs["perturbation"], seed=0), dataset="d",
                        chunk_nonzeros=1000)
    stats.write_h5ad(tmp_path / "stats.h5ad")
    folds = pd.DataFrame({
        "perturbation": ["A", "B", "C", "A+B", "A+C"] * 2, "fold": [0] * 5 + [1] * 5,
        "split": ["train", "train", "train", "test", "val", "train", "train", "train", "val", "test"],
    })
    mean_of = {p: x[labels == p].mean(axis=0) for p in ("control", "A", "B", "C")}
    for fold, combo in ((0, "A+B"), (1, "A+C")):
        part, _ = read_baseline_inputs("additive", tmp_path / "stats.h5ad", folds, fold)
        pred = predict_baseline("additive", fold_data(part, folds, fold, degs_td=None, modality="CRISPRi"))
        a, b = combo.split("+")
        np.testing.assert_allclose(pred.loc[combo], mean_of[a] + mean_of[b] - mean_of["control"], rtol=1e-12)
