"""The cell_eval, perturbench, systema and gene_spaces panels of pertcal.metrics against independent implementations:
cell-eval 0.8.2's own metric functions (one "cell" per mean profile, so its pseudobulk is the profile itself),
sklearn's AUCs and PCA, scPertEval's protocol metrics, scipy loops written from the PerturBench and Systema
definitions, and cases worked by hand."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.metrics import average_precision_score, mean_squared_error, roc_auc_score

from pertcal.metrics import METRICS, PANELS, metric_specs, panel_metrics, score_predictions

cell_eval = pytest.importorskip("cell_eval")
pl = pytest.importorskip("polars")
from cell_eval import metrics as ce  # noqa: E402
from cell_eval._score import _calc_norm_by_one, _calc_norm_by_zero  # noqa: E402
from cell_eval._types import PerturbationAnndataPair, initialize_de_comparison  # noqa: E402

ALL = list(PANELS)


@pytest.fixture(scope="module")
def fold():
    """8 perturbations named after genes (so cell-eval excludes the same target gene), 40 genes; values on a 1/256
    grid so cell-eval's float32 DE tables hold them exactly, with ties in |Δ| to exercise tie rules."""
    rng = np.random.default_rng(3)
    P, G = 8, 40
    q = lambda x: np.round(x * 256) / 256  # noqa: E731
    control = q(rng.gamma(2.0, 0.5, G))
    effect = q(rng.normal(0, 0.6, (P, G)) * (rng.random((P, G)) < 0.4))
    truth = control + effect + q(rng.normal(0, 0.05, (P, G)))
    pred = q(control + 0.3 * effect + rng.normal(0, 0.4, (P, G)))
    pred[:, 5] = pred[:, 6]  # tied |predicted Δ| across two genes
    # a finer grid for the mean baseline: no tied |Δ| at the top-N boundary, where cell-eval's tie order (polars'
    # rank over groups) is not specified and pertcal's is gene order
    mean = np.round((truth.mean(axis=0) + 0.01) * 65536) / 65536
    pval_adj = np.where(np.abs(effect) > 0, rng.uniform(0, 0.04, (P, G)), rng.uniform(0.06, 1, (P, G)))
    pval_adj[7] = rng.uniform(0.2, 1, G)  # a perturbation without DEGs
    scores = np.sign(effect) * -np.log10(pval_adj) + rng.normal(0, 1e-3, (P, G))
    genes = [f"g{j:02d}" for j in range(G)]
    names = genes[:P]
    targets = np.eye(P, G, dtype=bool)
    train = q(control + rng.normal(0, 0.3, (5, G)))
    hvg = rng.permutation(G) < 15  # 15 control HVGs, scattered
    # the dataset-wide PCs: a PCA of the Δctrl of test and train perturbations together
    pca = PCA(n_components=4, svd_solver="full").fit(np.vstack([truth, train]) - control)
    return dict(pred=pred, truth=truth, control=control, mean=mean, pval_adj=pval_adj, scores=scores, genes=genes,
                names=names, targets=targets, train=train, hvg=hvg, pca=pca)


def _ours(f, panels=ALL, pred=None):
    out = score_predictions(
        f["pred"] if pred is None else pred, f["truth"], f["control"], f["mean"], np.ones_like(f["truth"]),
        f["pval_adj"] < 0.05, f["names"], panels=panels, scores=f["scores"], targets=f["targets"], train_means=f["train"],
        hvg=f["hvg"], loadings=f["pca"].components_,
    )
    return out.pivot(index="perturbation", columns="metric", values="value").loc[f["names"]]


def _pair(f, pred):
    """cell-eval's input: one cell per perturbation (its mean profile) and one control cell, in real and pred."""
    obs = pd.DataFrame({"target": f["names"] + ["ctrl"]}, index=[f"c{i}" for i in range(len(f["names"]) + 1)])
    var = pd.DataFrame(index=f["genes"])
    real = ad.AnnData(np.vstack([f["truth"], f["control"]]), obs=obs, var=var)
    predicted = ad.AnnData(np.vstack([pred, f["control"]]), obs=obs.copy(), var=var)
    return PerturbationAnndataPair(real=real, pred=predicted, pert_col="target", control_pert="ctrl")


def _de_frame(f, lfc, fdr):
    P, G = lfc.shape
    return pl.DataFrame({
        "target": np.repeat(f["names"], G), "feature": np.tile(f["genes"], P), "log2_fold_change": lfc.ravel(),
        "p_value": fdr.ravel(), "fdr": fdr.ravel(),
    })


def _comparison(f, pred, pred_fdr):
    real = _de_frame(f, f["truth"] - f["control"], f["pval_adj"])
    return initialize_de_comparison(real, _de_frame(f, pred - f["control"], pred_fdr))


def _series(result, f):
    return pd.Series(result).reindex(f["names"]).to_numpy(dtype=float)


def row_identity(specs, metric):
    return specs.set_index("metric").loc[metric, "drf_identical_to"]


def test_registry_and_specs():
    specs = metric_specs()
    assert list(specs["metric"]) == list(METRICS) and not specs["metric"].duplicated().any()
    assert set(specs["panel"]) == {"paper", "cell_eval", "perturbench", "systema", "gene_spaces"}
    assert list(specs.columns) == ["metric", "panel", "higher_is_better", "perfect", "negative_control", "reference",
                                   "genes", "identical_to", "drf_identical_to"]
    # identical values mean identical DRFs; r2_deltactrl ≡ mse by algebra
    assert row_identity(specs, "pearson_delta") == "pearson_deltactrl" and row_identity(specs, "r2_deltactrl") == "mse"
    row = specs.set_index("metric")
    assert row.loc["pearson_deltapert", "negative_control"] == "control"
    assert row.loc["pearson_deltacentroid", "negative_control"] == "control"
    assert row.loc["mae", "negative_control"] == "mean" and not row.loc["mae", "higher_is_better"]
    assert row.loc["rmse_rank", "perfect"] == 0.0 and not row.loc["rmse_rank", "higher_is_better"]
    assert set(row["identical_to"].dropna()) <= set(row.index)
    assert panel_metrics(["systema"]) == ["centroid_accuracy", "pearson_deltacentroid", "pearson_deltacentroid_top20"]
    assert panel_metrics(["gene_spaces"])[4:] == ["pearson_deltactrl_hvg", "mse_hvg", "pearson_deltactrl_pcs", "mse_pcs"]
    for space in ("hvg", "pcs"):
        assert row.loc[f"pearson_deltactrl_{space}", ["genes", "reference", "higher_is_better", "perfect",
                                                      "negative_control"]].tolist() == [space, "ctrl", True, 1.0, "mean"]
        assert row.loc[f"mse_{space}", ["genes", "higher_is_better", "perfect", "negative_control"]].tolist() == [
            space, False, 0.0, "mean"]
    with pytest.raises(ValueError, match="unknown metric panel"):
        panel_metrics(["nope"])


def test_panel_selection_keeps_paper_values(fold):
    paper = _ours(fold, ["paper"])
    everything = _ours(fold)
    assert list(paper.columns.sort_values()) == sorted(panel_metrics())
    pd.testing.assert_frame_equal(paper, everything[paper.columns])


def test_pseudobulk_metrics_equal_cell_eval(fold):
    ours = _ours(fold)
    pair = _pair(fold, fold["pred"])
    for name, fn in [("pearson_delta", ce.pearson_delta), ("mse", ce.mse), ("mae", ce.mae),
                     ("mse_delta", ce.mse_delta), ("mae_delta", ce.mae_delta)]:
        np.testing.assert_allclose(ours[name], _series(fn(pair), fold), rtol=1e-12, atol=1e-14, err_msg=name)
    for distance in ("l1", "l2", "cosine"):
        theirs = _series(ce.discrimination_score(pair, metric=distance), fold)
        np.testing.assert_array_equal(ours[f"discrimination_score_{distance}"], theirs, err_msg=distance)
    assert ours["discrimination_score_l1"].min() < 1  # not trivially perfect


def test_discrimination_excludes_targets_by_hand():
    # a's prediction misses only its target gene (gene 0): on the other genes it equals its own truth, but with
    # gene 0 counted b's truth is nearer (L1: 1 < 5).
    control = np.zeros(3)
    truth = np.array([[5.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    pred = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]])
    targets = np.array([[True, False, False], [False, True, False]])
    out = score_predictions(pred, truth, control, control, np.ones((2, 3)), np.ones((2, 3), bool), ["a", "b"],
                            panels=["cell_eval"], targets=targets)
    v = out.pivot(index="perturbation", columns="metric", values="value")
    assert (v["discrimination_score_l1"] == 1.0).all()
    no_targets = score_predictions(pred, truth, control, control, np.ones((2, 3)), np.ones((2, 3), bool), ["a", "b"],
                                   panels=["cell_eval"]).pivot(index="perturbation", columns="metric", values="value")
    assert list(no_targets["discrimination_score_l1"]) == [0.5, 1.0]  # b's truth strictly closer to a's: 1 − 1/2


def test_de_metrics_equal_cell_eval(fold):
    ours = _ours(fold)
    P, G = fold["pred"].shape
    # Every gene "significant" in the prediction, so cell-eval ranks all genes by |predicted Δ| as pertcal does.
    everything = _comparison(fold, fold["pred"], np.zeros((P, G)))
    for k in (None, 50, 100, 200, 500):
        name = f"overlap_at_{k or 'N'}"
        theirs = _series(ce.de_overlap_metric(everything, k=k, metric="overlap"), fold)
        theirs[7] = np.nan  # no true DEGs: cell-eval scores 0, pertcal leaves it undefined
        np.testing.assert_allclose(ours[name], theirs, rtol=0, atol=1e-15, err_msg=name)
    theirs = _series(ce.DEDirectionMatch()(everything), fold)
    np.testing.assert_allclose(ours["de_direction_match"], theirs, atol=1e-15)
    theirs = _series(ce.DESpearmanLFC()(everything), fold)
    np.testing.assert_allclose(ours["de_spearman_lfc_sig"], theirs, atol=1e-12)
    # AUCs: cell-eval scores genes by −log10 predicted FDR; an FDR of 10^−|Δ| gives the |Δ| ranking, ties included.
    ranked = _comparison(fold, fold["pred"], 10.0 ** -np.abs(fold["pred"] - fold["control"]))
    for name, fn in [("pr_auc", ce.compute_pr_auc), ("roc_auc", ce.compute_roc_auc)]:
        np.testing.assert_allclose(ours[name], _series(fn(ranked), fold), rtol=1e-6, err_msg=name)
    assert ours.loc[fold["names"][:7], ["overlap_at_N", "pr_auc", "de_spearman_lfc_sig"]].notna().all().all()


def test_aucs_equal_sklearn_with_ties():
    rng = np.random.default_rng(11)
    P, G = 30, 60
    pred = np.round(rng.normal(0, 1, (P, G)) * 4) / 4  # many tied |Δ|
    labels = rng.random((P, G)) < 0.2
    labels[0] = False  # no positives -> NaN
    out = score_predictions(pred, np.zeros((P, G)), np.zeros(G), np.zeros(G), np.ones((P, G)), labels,
                            [f"p{i}" for i in range(P)], panels=["cell_eval"])
    v = out.pivot(index="perturbation", columns="metric", values="value").loc[[f"p{i}" for i in range(P)]]
    ref_roc = [roc_auc_score(labels[i], np.abs(pred[i])) for i in range(1, P)]
    ref_pr = [average_precision_score(labels[i], np.abs(pred[i])) for i in range(1, P)]
    np.testing.assert_allclose(v["roc_auc"].iloc[1:], ref_roc, rtol=1e-12)
    np.testing.assert_allclose(v["pr_auc"].iloc[1:], ref_pr, rtol=1e-12)
    assert np.isnan(v["roc_auc"].iloc[0]) and np.isnan(v["pr_auc"].iloc[0])


def test_vcc_composite_normalizes_like_cell_eval(fold):
    ours = _ours(fold)
    P, G = fold["pred"].shape
    base = np.tile(fold["mean"], (P, 1))
    terms = {}
    for who, pred in (("user", fold["pred"]), ("base", base)):
        pair, de = _pair(fold, pred), _comparison(fold, pred, np.zeros((P, G)))
        terms[who] = (_series(ce.mae(pair), fold), _series(ce.discrimination_score(pair, metric="l1"), fold),
                      _series(ce.de_overlap_metric(de, k=None, metric="overlap"), fold))
    norm = np.column_stack([
        _calc_norm_by_zero(terms["user"][0], terms["base"][0]),
        _calc_norm_by_one(terms["user"][1], terms["base"][1]),
        _calc_norm_by_one(terms["user"][2], terms["base"][2]),
    ])
    norm[np.isnan(norm)] = 0.0  # as cell-eval's score
    np.testing.assert_allclose(ours["vcc_score"], np.clip(norm, 0, None).mean(axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["vcc_score_unclipped"], norm.mean(axis=1), rtol=1e-12, atol=1e-15)
    mean_baseline = _ours(fold, pred=base)
    assert (mean_baseline["vcc_score"] == 0).all() and (mean_baseline["vcc_score_unclipped"] == 0).all()


def test_perturbench_against_loop(fold):
    ours = _ours(fold)
    pred, truth, control = fold["pred"], fold["truth"], fold["control"]
    P = len(pred)
    rmse = np.sqrt(((pred - truth) ** 2).mean(axis=1))
    dp, dt = pred - control, truth - control
    cos = np.array([1 - cdist(dp[[i]], dt[[i]], "cosine")[0, 0] for i in range(P)])
    np.testing.assert_allclose(ours["rmse"], rmse, rtol=1e-12)
    np.testing.assert_allclose(ours["cosine_logfc"], cos, rtol=1e-12)
    # rank_i = (1/(P−1)) Σ_{j≠i} 1[dist(ŷ_j, y_i) ≤ dist(ŷ_i, y_i)]  (method.md)
    for name, d in (("rmse_rank", cdist(pred, truth)), ("cosine_logfc_rank", cdist(dp, dt, "cosine"))):
        ref = [np.mean([d[j, i] <= d[i, i] for j in range(P) if j != i]) for i in range(P)]
        np.testing.assert_array_equal(ours[name], ref, err_msg=name)


def test_perturbench_ranks_by_hand():
    # Identical predictions (a constant baseline) tie with every other prediction: rank 1 (worst), not 0.5.
    truth = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    same = np.tile([0.5, 0.5], (3, 1))
    v = score_predictions(same, truth, np.zeros(2), np.zeros(2), np.ones((3, 2)), np.ones((3, 2), bool), list("abc"),
                          panels=["perturbench"]).pivot(index="perturbation", columns="metric", values="value")
    assert (v["rmse_rank"] == 1.0).all() and (v["cosine_logfc_rank"] == 1.0).all()
    perfect = score_predictions(truth, truth, np.zeros(2), np.zeros(2), np.ones((3, 2)), np.ones((3, 2), bool),
                                list("abc"), panels=["perturbench"]).pivot(index="perturbation", columns="metric",
                                                                           values="value")
    assert (perfect["rmse_rank"] == 0.0).all() and (perfect["rmse"] == 0.0).all()


def test_systema_against_its_definitions(fold):
    ours = _ours(fold)
    pred, truth, train = fold["pred"], fold["truth"], fold["train"]
    P = len(pred)
    centroids = np.vstack([truth, train])
    # Systema's calculate_centroid_accuracies: (distances > own distance).sum() / (n_centroids − 1)
    d = cdist(pred, centroids)
    acc = [(d[i] > d[i, i]).sum() / (len(centroids) - 1) for i in range(P)]
    np.testing.assert_array_equal(ours["centroid_accuracy"], acc)
    reference = centroids.mean(axis=0)  # average of perturbation centroids
    scores = np.abs(fold["scores"])
    for i in range(P):
        dp, dt = pred[i] - reference, truth[i] - reference
        top20 = np.argsort(-scores[i], kind="stable")[:20]
        assert ours["pearson_deltacentroid"].iloc[i] == pytest.approx(sps.pearsonr(dp, dt).statistic, rel=1e-12)
        assert ours["pearson_deltacentroid_top20"].iloc[i] == pytest.approx(
            sps.pearsonr(dp[top20], dt[top20]).statistic, rel=1e-12)
        assert ours["pearson_deltactrl_top100"].iloc[i] == pytest.approx(ours["pearson_deltactrl"].iloc[i], rel=1e-12)


def test_top_k_space_undefined_for_untested():
    P, G = 2, 30
    rng = np.random.default_rng(2)
    truth, pred = rng.normal(size=(P, G)), rng.normal(size=(P, G))
    scores = rng.normal(size=(P, G))
    scores[1] = np.nan  # untested perturbation
    v = score_predictions(pred, truth, np.zeros(G), np.zeros(G), np.ones((P, G)), np.ones((P, G), bool), ["a", "b"],
                          panels=["gene_spaces"], scores=scores, hvg=np.ones(G, bool),
                          loadings=np.eye(3, G)).pivot(index="perturbation", columns="metric", values="value")
    top = np.argsort(-np.abs(scores[0]), kind="stable")[:20]
    assert v.loc["a", "mse_top20"] == pytest.approx(np.mean((pred[0, top] - truth[0, top]) ** 2), rel=1e-12)
    top_k = [m for m in v.columns if "_top" in m]
    assert len(top_k) == 4 and v.loc["b", top_k].isna().all()
    # the dataset-wide spaces do not need a DE test
    assert v.loc["b"].drop(top_k).notna().all()


def test_hvg_and_pc_spaces_against_sklearn_scipy_and_scperteval(fold):
    pm = pytest.importorskip("scperteval.protocols.metrics")
    ours = _ours(fold)
    pred, truth, control, hvg, pca = fold["pred"], fold["truth"], fold["control"], fold["hvg"], fold["pca"]
    dp, dt = pred - control, truth - control
    # projections of Δ onto the loadings: sklearn's transform less its image of 0 (transform subtracts the PCA mean)
    zero = pca.transform(np.zeros((1, dp.shape[1])))
    pp, pt = pca.transform(dp) - zero, pca.transform(dt) - zero
    for i in range(len(pred)):
        assert ours["pearson_deltactrl_hvg"].iloc[i] == pytest.approx(sps.pearsonr(dp[i, hvg], dt[i, hvg]).statistic,
                                                                      rel=1e-12)
        assert ours["pearson_deltactrl_hvg"].iloc[i] == pytest.approx(pm.pearson(dt[i, hvg], dp[i, hvg], None), rel=1e-12)
        assert ours["mse_hvg"].iloc[i] == pytest.approx(mean_squared_error(truth[i, hvg], pred[i, hvg]), rel=1e-12)
        assert ours["mse_hvg"].iloc[i] == pytest.approx(pm.mse(truth[i, hvg], pred[i, hvg], None), rel=1e-12)
        assert ours["pearson_deltactrl_pcs"].iloc[i] == pytest.approx(sps.pearsonr(pp[i], pt[i]).statistic, rel=1e-10)
        assert ours["pearson_deltactrl_pcs"].iloc[i] == pytest.approx(pm.pearson(pt[i], pp[i], None), rel=1e-10)
        # the MSE of projected profiles: the PCA's centring cancels in the difference
        assert ours["mse_pcs"].iloc[i] == pytest.approx(
            mean_squared_error(pca.transform(truth[[i]])[0], pca.transform(pred[[i]])[0]), rel=1e-10)
    # neither space is trivially the all-gene one
    assert not np.allclose(ours["pearson_deltactrl_hvg"], ours["pearson_deltactrl"])
    assert not np.allclose(ours["pearson_deltactrl_pcs"], ours["pearson_deltactrl"])


def test_hvg_and_pc_spaces_need_their_inputs():
    P, G = 2, 5
    args = (np.ones((P, G)), np.zeros((P, G)), np.zeros(G), np.zeros(G), np.ones((P, G)), np.ones((P, G), bool), ["a", "b"])
    with pytest.raises(ValueError, match="gene space 'hvg' needs the dataset's control HVGs"):
        score_predictions(*args, panels=["gene_spaces"], loadings=np.eye(2, G))
    with pytest.raises(ValueError, match="gene space 'pcs' needs the dataset's PC loadings"):
        score_predictions(*args, panels=["gene_spaces"], hvg=np.ones(G, bool))
    with pytest.raises(ValueError, match="loadings has shape"):
        score_predictions(*args, panels=["gene_spaces"], hvg=np.ones(G, bool), loadings=np.eye(2, G + 1))
    # the other panels do not need them
    assert score_predictions(*args, panels=["paper"])["value"].notna().any()


def test_l1_tiles_cover_ragged_shapes():
    from pertcal.metrics import _l1_matrix

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(70, 2100)), rng.normal(size=(33, 2100))  # neither a multiple of the tile sizes
    np.testing.assert_allclose(_l1_matrix(a, b), cdist(a, b, "cityblock"), rtol=1e-12)
