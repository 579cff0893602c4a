"""Energy distances from streamed per-perturbation statistics against scPerturb's `edist` on the same cells, and the
quality summaries against hand-worked cases."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import scperturb

from pertcal import quality
from pertcal.quality import (
    choose_perturbations,
    coefficient_of_variation,
    dataset_energy_distances,
    drf_vs_quality,
    energy_distances,
    quality_summary,
)


def _group_stats(z: np.ndarray, labels: np.ndarray, groups: list[str]):
    idx = [np.flatnonzero(labels == g) for g in groups]
    n = np.array([i.size for i in idx])
    sums = np.stack([z[i].sum(axis=0) for i in idx])
    sumsq = np.array([np.sum(z[i] ** 2) for i in idx])
    return n, sums, sumsq


def _scperturb(z: np.ndarray, labels: np.ndarray, groups: list[str]) -> np.ndarray:
    a = ad.AnnData(X=np.zeros((len(labels), 1)), obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]))
    a.obsm["X_pca"] = z
    ref = scperturb.edist(a, obs_key="perturbation", obsm_key="X_pca", n_jobs=1, verbose=False)
    return ref.loc[groups, groups].to_numpy(dtype=float)


def test_energy_distances_equal_scperturb_on_the_same_coordinates():
    rng = np.random.default_rng(0)
    groups = [f"p{i}" for i in range(7)]
    sizes = [2, 3, 5, 17, 40, 8, 25]
    # groups at various distances, some nearly on top of each other (small E: cancellation would show)
    centres = rng.normal(size=(7, 6)) * np.array([3, 3, 0.01, 1, 0.001, 2, 0.5])[:, None]
    z = np.concatenate([c + rng.normal(scale=0.7, size=(s, 6)) for c, s in zip(centres, sizes)]) + 10.0
    labels = np.repeat(groups, sizes)
    ours = energy_distances(*_group_stats(z, labels, groups))
    ref = _scperturb(z, labels, groups)
    off = ~np.eye(7, dtype=bool)
    np.testing.assert_allclose(ours[off], ref[off], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(np.diag(ours), np.diag(ref))


def test_energy_distance_hand_case():
    # X = {0, 2}, Y = {3, 5} in one dimension: δ = (9 + 25 + 1 + 9) / 4 = 11, σ_X = σ_Y = (4 + 4) / 2 = 4, E = 14
    e = energy_distances(np.array([2, 2]), np.array([[2.0], [8.0]]), np.array([4.0, 34.0]))
    assert e[0, 1] == pytest.approx(14.0) and e[1, 0] == pytest.approx(14.0) and e[0, 0] == 0
    # a group of one cell has no within-group spread: scPerturb divides by N − 1 = 0
    e = energy_distances(np.array([2, 1]), np.array([[2.0], [3.0]]), np.array([4.0, 9.0]))
    assert np.isnan(e[0, 1])


def _processed_file(path, rng, n_genes=40):
    groups = ["control", "A", "B", "C", "D+E"]
    sizes = [60, 25, 12, 30, 18]
    labels = np.repeat(groups, sizes)
    effects = {g: (rng.random(n_genes) < 0.3) * rng.normal(scale=1.2, size=n_genes) for g in groups}
    effects["control"][:] = 0
    base = rng.gamma(2.0, 0.6, size=n_genes)
    x = np.stack([np.log1p(rng.poisson(np.exp(np.log(base) + effects[g]))) for g in labels]).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"cell{i}" for i in range(len(labels))])
    var = pd.DataFrame({"highly_variable": np.arange(n_genes) % 4 != 3}, index=[f"g{i}" for i in range(n_genes)])
    ad.AnnData(X=sp.csr_matrix(x), obs=obs, var=var).write_h5ad(path)
    return x, obs, var


def test_streamed_pca_and_edist_equal_scanpy_pca_then_scperturb(tmp_path, monkeypatch):
    """The whole path (covariance pass, PCA from it, projection pass) against the published recipe on cells."""
    x, obs, var = _processed_file(tmp_path / "p.h5ad", np.random.default_rng(1))
    monkeypatch.setattr(quality, "DENSE_BLOCK_VALUES", 200)  # several dense blocks per chunk
    pairs, per_pert = dataset_energy_distances(
        tmp_path / "p.h5ad", obs, var, dataset="toy", n_pcs=8, max_perturbations=300, seed=42, chunk_nonzeros=1500,
    )
    ref_data = ad.AnnData(X=x.astype(np.float64), obs=obs.copy(), var=var.copy())
    sc.pp.pca(ref_data, n_comps=8, dtype="float64")  # scanpy's default: highly variable genes, centred
    groups = ["control", "A", "B", "C", "D+E"]
    ref = pd.DataFrame(_scperturb(ref_data.obsm["X_pca"], obs["perturbation"].to_numpy(), groups), index=groups, columns=groups)
    got = pairs.set_index(["perturbation_a", "perturbation_b"])["edist"]
    assert len(got) == 10 and all(a < b for a, b in got.index)
    for (a, b), value in got.items():
        assert value == pytest.approx(ref.loc[a, b], rel=1e-6)
    per = per_pert.set_index("perturbation")
    assert list(per.index) == ["A", "B", "C", "D+E"] and per.loc["B", "n_cells"] == 12
    others = ["A", "C", "D+E"]
    assert per.loc["B", "mean_edist"] == pytest.approx(ref.loc["B", others].mean(), rel=1e-6)
    assert per.loc["C", "edist_to_control"] == pytest.approx(ref.loc["C", "control"], rel=1e-6)
    assert per_pert.attrs["n_pcs"] == 8


def test_a_perturbation_subset_keeps_the_control_and_is_seeded(tmp_path):
    _, obs, var = _processed_file(tmp_path / "p.h5ad", np.random.default_rng(2))
    kw = dict(dataset="toy", n_pcs=4, max_perturbations=2, seed=7, chunk_nonzeros=10_000)
    pairs, per_pert = dataset_energy_distances(tmp_path / "p.h5ad", obs, var, **kw)
    again, _ = dataset_energy_distances(tmp_path / "p.h5ad", obs, var, **kw)
    pd.testing.assert_frame_equal(pairs, again)
    assert len(per_pert) == 2 and "control" in set(pairs["perturbation_a"]) | set(pairs["perturbation_b"])


def test_choose_perturbations():
    names = ["control", "b", "a", "c", "a"]
    assert list(choose_perturbations(names, max_perturbations=5, seed=0)) == ["a", "b", "c"]
    picked = choose_perturbations([f"p{i}" for i in range(50)], max_perturbations=10, seed=3)
    assert picked.size == 10 and list(picked) == sorted(picked)
    assert list(picked) == list(choose_perturbations([f"p{i}" for i in range(50)][::-1], max_perturbations=10, seed=3))


def test_missing_highly_variable_is_refused(tmp_path):
    _, obs, var = _processed_file(tmp_path / "p.h5ad", np.random.default_rng(3))
    with pytest.raises(ValueError, match="dataset 'toy'.*highly_variable"):
        dataset_energy_distances(tmp_path / "p.h5ad", obs, var.drop(columns="highly_variable"), dataset="toy",
                                 n_pcs=4, max_perturbations=5, seed=0, chunk_nonzeros=1000)


def test_quality_summary_hand_case():
    pairs = pd.DataFrame({
        "perturbation_a": ["A", "A", "B", "A", "B", "C"],
        "perturbation_b": ["B", "C", "C", "control", "control", "control"],
        "edist": [1.0, 2.0, 6.0, 50.0, 50.0, 50.0],
    })
    per_pert = pd.DataFrame({"perturbation": ["A", "B", "C"]})
    got = quality_summary(pairs, per_pert, pd.Series([0, 2, 4]), pd.Series([10, 10, 40]), dataset="d")
    assert got["mean_edist"] == pytest.approx(3.0) and got["median_edist"] == 2.0
    assert got["std_edist"] == pytest.approx(np.std([1.0, 2.0, 6.0]))
    # CV with the population sd: degs sd sqrt(8/3) over mean 2; cells sd sqrt(200) over mean 20
    assert got["cv_degs"] == pytest.approx(np.sqrt(8 / 3) / 2)
    assert got["cv_cells"] == pytest.approx(np.sqrt(200) / 20)
    assert got["cells_per_perturbation"] == 20 and got["n_perturbations"] == 3
    assert np.isnan(coefficient_of_variation([0, 0]))


def test_drf_vs_quality_spearman():
    mean_drf = pd.DataFrame({
        "dataset": ["d1", "d2", "d3", "d4"] * 2,
        "metric": ["mse"] * 4 + ["wmse"] * 4,
        "mean_drf": [0.1, 0.2, 0.3, 0.4, 0.5, np.nan, 0.2, 0.1],
    })
    quality_table = pd.DataFrame({
        "dataset": ["d1", "d2", "d3", "d4"], "mean_edist": [1.0, 2.0, 3.0, 4.0], "cv_degs": [4.0, 3.0, 2.0, 1.0],
        "cv_cells": [0.1, 0.1, 0.1, 0.1], "mean_degs": [1.0, 5.0, 2.0, 8.0],
    })
    points, rho = drf_vs_quality(mean_drf, quality_table)
    r = rho.set_index(["measure", "metric"])
    assert r.loc[("mean_edist", "mse"), "rho"] == pytest.approx(1.0)
    assert r.loc[("cv_degs", "mse"), "rho"] == pytest.approx(-1.0)
    assert r.loc[("mean_edist", "wmse"), "n"] == 3  # the censored (NaN) cell is left out
    assert r.loc[("mean_edist", "wmse"), "rho"] == pytest.approx(-1.0)
    assert np.isnan(r.loc[("cv_cells", "all"), "rho"])  # constant measure
    x = points.loc[points["measure"] == "mean_degs", ["value", "mean_drf"]].to_numpy()
    from scipy.stats import spearmanr

    assert r.loc[("mean_degs", "all"), "rho"] == pytest.approx(spearmanr(x[:, 0], x[:, 1]).statistic)
