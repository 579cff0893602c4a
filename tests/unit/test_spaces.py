"""The gene_spaces panel's dataset-wide spaces against independent references: the control HVGs against scanpy's
own highly_variable_genes(flavor="seurat") and scPertEval's `control_dispersion` ordering, the PC loadings against
sklearn's PCA and numpy's SVD of the same rows."""

from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.decomposition import PCA

from pertcal.evaluate import GeneSpaces, read_gene_spaces
from pertcal.io import PertcalInputError, write_h5ad, write_parquet
from pertcal.spaces import control_hvgs_file, pseudobulk_pcs

scperteval_helpers = pytest.importorskip("scperteval.blocks.spaces.helpers")

G = 200


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A processed-like h5ad: 420 cells (150 control, shuffled among the perturbed), log1p-normalized counts whose
    gene means span three decades; gene 0 is never expressed in control (NaN dispersion), gene 1 is far above every
    other gene (alone in the top mean bin: seurat's one-gene-bin rule)."""
    rng = np.random.default_rng(11)
    labels = np.repeat(["control", "A", "B", "C"], [150, 90, 100, 80])
    rng.shuffle(labels)
    mu = np.exp(rng.uniform(np.log(0.05), np.log(40), G))
    mu[1] = 3000.0
    counts = rng.negative_binomial(2, 2 / (2 + mu), size=(labels.size, G)).astype(np.float32)
    counts[labels == "control", 0] = 0
    adata = ad.AnnData(sp.csr_matrix(counts), obs=pd.DataFrame(
        {"perturbation": labels, "is_control": labels == "control"}, index=[f"c{i}" for i in range(labels.size)]),
        var=pd.DataFrame(index=[f"g{j:02d}" for j in range(G)]))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    del adata.uns["log1p"]
    path = tmp_path_factory.mktemp("hvg") / "processed.h5ad"
    adata.write_h5ad(path)
    return path, adata


def test_control_hvgs_equal_scanpy_seurat(processed):
    path, adata = processed
    ours = control_hvgs_file(path, dataset="d", n_top=12, chunk_nonzeros=10**9)
    control = adata[adata.obs["is_control"].to_numpy()]
    theirs = sc.pp.highly_variable_genes(ad.AnnData(control.X.copy()), flavor="seurat", n_top_genes=12, inplace=False)
    assert list(ours["gene"]) == list(adata.var_names)
    # scanpy squares the float32 values in float32 before summing in float64 (pertcal squares in float64): the
    # statistics agree to float32 rounding, ~1e-7 relative, which the z-scoring turns into ~1e-7 absolute
    for column in ("means", "dispersions"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-6, err_msg=column)
    np.testing.assert_allclose(ours["dispersions_norm"], theirs["dispersions_norm"], rtol=1e-6, atol=1e-6)
    # the edge cases the data was built for are exercised, and treated as scanpy treats them
    assert np.isnan(ours.loc[0, "dispersions_norm"]) and np.isnan(theirs["dispersions_norm"].iloc[0])
    assert ours.loc[1, "dispersions_norm"] == 1.0
    np.testing.assert_array_equal(ours["highly_variable"], theirs["highly_variable"])
    assert ours["highly_variable"].sum() == 12


def test_control_hvgs_order_is_scperteval_hvg_space(processed):
    path, adata = processed
    ours = control_hvgs_file(path, dataset="d", n_top=G, chunk_nonzeros=10**9)
    scope = SimpleNamespace(ds=SimpleNamespace(adata=adata, control_idx=np.flatnonzero(adata.obs["is_control"])))
    dispersion = scperteval_helpers.control_dispersion.__wrapped__(scope)
    order = np.argsort(-dispersion)  # scPertEval's `hvg` space: np.argsort(-control_dispersion(ctx))[:k]
    ranked = ours.sort_values("rank")
    # the same sequence of normalized dispersions, NaN last
    np.testing.assert_allclose(ranked["dispersions_norm"], dispersion[order], rtol=1e-6, atol=1e-6)
    # and the same genes, wherever the order is set by the values (no near-ties in the top 21; further down two
    # one-gene bins tie at exactly 1, ordered by gene here and unspecified by argsort there)
    top = dispersion[order[:21]]
    assert np.all(-np.diff(top) > 1e-6)
    for k in (5, 20):
        np.testing.assert_array_equal(ranked["gene"].to_numpy()[:k], adata.var_names[order[:k]], err_msg=f"k={k}")
    # n_top beyond the genes: every gene, the constant one (NaN dispersion) last
    assert ours["highly_variable"].all() and ours.loc[0, "rank"] == G


def test_control_hvgs_chunking_gives_identical_table(processed):
    path, _ = processed
    whole = control_hvgs_file(path, dataset="d", n_top=10, chunk_nonzeros=10**9)
    chunked = control_hvgs_file(path, dataset="d", n_top=10, chunk_nonzeros=37)  # hundreds of chunks
    pd.testing.assert_frame_equal(whole, chunked, check_exact=True)


def test_control_hvgs_refuse_too_few_controls(tmp_path):
    a = ad.AnnData(sp.csr_matrix(np.ones((3, 2), dtype=np.float32)),
                   obs=pd.DataFrame({"is_control": [True, False, False]}, index=["a", "b", "c"]))
    a.write_h5ad(tmp_path / "p.h5ad")
    with pytest.raises(PertcalInputError, match="dataset 'd'.*1 control cell"):
        control_hvgs_file(tmp_path / "p.h5ad", dataset="d", n_top=1, chunk_nonzeros=100)


def _stats(means: dict[tuple[str, str], np.ndarray], n: dict[tuple[str, str], int]) -> ad.AnnData:
    """A stats.h5ad-like AnnData from (perturbation, half) → mean profile and cell count."""
    keys = list(means)
    obs = pd.DataFrame({"perturbation": [p for p, _ in keys], "half": [h for _, h in keys],
                        "n_cells": [n[k] for k in keys]}, index=[f"{p}|{h}" for p, h in keys])
    total = np.vstack([means[k] * n[k] for k in keys])
    return ad.AnnData(obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(total.shape[1])]), layers={"sum": total})


def _random_stats(P: int, genes: int, seed: int):
    rng = np.random.default_rng(seed)
    perts = ["control"] + [f"p{i}" for i in range(P)]
    means = {(p, h): rng.gamma(2.0, 0.5, genes) for p in perts for h in ("gt", "td")}
    n = {(p, h): int(rng.integers(5, 40)) for p in perts for h in ("gt", "td")}
    control = (means["control", "gt"] * n["control", "gt"] + means["control", "td"] * n["control", "td"]) / (
        n["control", "gt"] + n["control", "td"])
    delta = np.vstack([means[p, "gt"] for p in perts[1:]]) - control
    return _stats(means, n), delta


def test_pcs_equal_sklearn_and_svd():
    stats, delta = _random_stats(P=25, genes=40, seed=5)
    pcs = pseudobulk_pcs(stats, n_components=6)
    reference = PCA(n_components=6, svd_solver="full").fit(delta)
    assert list(pcs.obs_names) == [f"pc{k}" for k in range(1, 7)] and list(pcs.var_names) == list(stats.var_names)
    np.testing.assert_allclose(pcs.X, reference.components_, atol=1e-12)
    np.testing.assert_allclose(pcs.obs["explained_variance"], reference.explained_variance_, rtol=1e-12)
    # numpy's SVD of the centred rows: the same axes up to sign; the sign puts each axis' largest entry positive
    _, s, vt = np.linalg.svd(delta - delta.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pcs.X), np.abs(vt[:6]), atol=1e-12)
    assert np.all(pcs.X[np.arange(6), np.abs(pcs.X).argmax(axis=1)] > 0)
    np.testing.assert_allclose(pcs.obs["explained_variance"], s[:6] ** 2 / (len(delta) - 1), rtol=1e-10)


def test_pcs_stop_at_the_rank():
    stats, delta = _random_stats(P=4, genes=30, seed=6)
    pcs = pseudobulk_pcs(stats, n_components=10)
    assert pcs.n_obs == np.linalg.matrix_rank(delta - delta.mean(axis=0)) == 3
    np.testing.assert_allclose(pcs.X @ pcs.X.T, np.eye(3), atol=1e-12)


def test_pcs_loadings_do_not_depend_on_control():
    stats, _ = _random_stats(P=8, genes=20, seed=7)
    shifted = stats.copy()
    rows = (shifted.obs["perturbation"] == "control").to_numpy()
    shifted.layers["sum"][rows] += 3.0 * shifted.obs["n_cells"].to_numpy()[rows, None]
    np.testing.assert_allclose(pseudobulk_pcs(shifted, n_components=5).X, pseudobulk_pcs(stats, n_components=5).X,
                               atol=1e-12)


def test_gene_spaces_round_trip_aligned_by_name(tmp_path, processed):
    path, adata = processed
    write_parquet(control_hvgs_file(path, dataset="d", n_top=7, chunk_nonzeros=10**9), tmp_path / "hvgs.parquet")
    stats, _ = _random_stats(P=10, genes=G, seed=8)
    stats.var_names = adata.var_names
    write_h5ad(pseudobulk_pcs(stats, n_components=4), tmp_path / "pcs.h5ad")
    spaces = read_gene_spaces(SimpleNamespace(hvgs=tmp_path / "hvgs.parquet", pcs=tmp_path / "pcs.h5ad"))
    assert read_gene_spaces(SimpleNamespace()) is None  # a rule without the panel's inputs
    genes = adata.var_names[::-1]  # another order: matched by name, not position
    hvg, loadings = spaces.aligned(genes, source="x")
    table = pd.read_parquet(tmp_path / "hvgs.parquet").set_index("gene")
    np.testing.assert_array_equal(hvg, table.loc[genes, "highly_variable"].to_numpy())
    np.testing.assert_array_equal(loadings, ad.read_h5ad(tmp_path / "pcs.h5ad")[:, genes].X)
    with pytest.raises(PertcalInputError, match="x: HVG table lacks 1 scored genes"):
        GeneSpaces(spaces.hvg.iloc[1:], spaces.loadings).aligned(adata.var_names, source="x")
