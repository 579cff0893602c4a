"""pertcal.ranksum against scanpy's rank_genes_groups(method="wilcoxon") and scipy's rank-sum test on the cells."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from scipy import stats as sps

from pertcal import degs
from pertcal.io import PertcalInputError
from pertcal.ranksum import wilcoxon_file
from pertcal.reduce import reduce_file
from pertcal.split import split_halves

SIZES = {"control": 90, "A": 12, "B": 10, "C": 9, "D": 14, "E": 8, "A+B": 11, "tiny": 5}
MIN_CELLS = 4


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """~160 cells × 25 genes of log1p integer counts (many ties), stored zeros among the entries, both halves."""
    rng = np.random.default_rng(0)
    labels = np.repeat(list(SIZES), list(SIZES.values()))
    rng.shuffle(labels)
    n_genes = 25
    rate = rng.gamma(0.8, 1.5, n_genes)
    effect = {p: np.exp(rng.normal(0, 0.8, n_genes)) for p in SIZES}
    counts = rng.poisson(rate * np.array([effect[p] for p in labels]))
    counts[:, 0] = 0  # unexpressed: every cell tied at zero
    counts[:, 1] += 1  # expressed in every cell: no zeros at all
    x = sp.csr_matrix(np.log1p(counts).astype(np.float32))
    x.data[::7] = 0.0  # explicit zeros, stored as entries: they must rank with the absent ones
    assert (x.data == 0).any()
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(labels.size)])
    var = pd.DataFrame(index=[f"g{j}" for j in range(n_genes)])
    path = tmp_path_factory.mktemp("ranksum") / "processed.h5ad"
    ad.AnnData(x, obs=obs, var=var).write_h5ad(path)
    halves = split_halves(obs["perturbation"], seed=1)
    cell_half = halves.set_index("cell").loc[obs.index, "half"].to_numpy()
    return path, x, labels, cell_half, halves


def _ours(cells, half, rest_includes_controls, chunk_nonzeros=10**9, path=None):
    return wilcoxon_file(
        path or cells[0], cells[4], half, dataset="toy", min_cells=MIN_CELLS,
        rest_includes_controls=rest_includes_controls, chunk_nonzeros=chunk_nonzeros,
    )


def _tested(labels, cell_half, half):
    counts = pd.Series(labels[cell_half == half]).value_counts()
    return sorted(p for p, c in counts.items() if c >= MIN_CELLS and p != "control")


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # scanpy's own frame building
@pytest.mark.parametrize("half", ["gt", "td"])
@pytest.mark.parametrize("rest_includes_controls", [False, True])
def test_matches_scanpy_wilcoxon(cells, half, rest_includes_controls):
    _, x, labels, cell_half, _ = cells
    ours = _ours(cells, half, rest_includes_controls)
    tested = _tested(labels, cell_half, half)
    assert "tiny" not in tested and len(tested) == 6  # below min_cells in each half: never tested nor in the rest
    assert sorted(ours.obs_names) == tested

    # scanpy's rest with `groups` a subset is every other cell of the AnnData (its _RankGenes masks ~group over all
    # of X): so the AnnData holds the tested perturbations' cells, and the controls' only when they join the rest
    members = tested + (["control"] if rest_includes_controls else [])
    keep = (cell_half == half) & np.isin(labels, members)
    adata = ad.AnnData(
        x[np.flatnonzero(keep)],
        obs=pd.DataFrame({"perturbation": pd.Categorical(labels[keep])}, index=[str(i) for i in range(keep.sum())]),
        var=pd.DataFrame(index=ours.var_names),
    )
    sc.tl.rank_genes_groups(adata, "perturbation", groups=tested, reference="rest", method="wilcoxon",
                            n_genes=adata.n_vars, corr_method="benjamini-hochberg")
    ref = sc.get.rank_genes_groups_df(adata, group=None)
    for column, layer in (("scores", "score"), ("pvals_adj", "pval_adj")):
        expected = ref.pivot(index="group", columns="names", values=column).loc[ours.obs_names, ours.var_names]
        np.testing.assert_allclose(ours.layers[layer], expected.to_numpy(), rtol=1e-6, atol=1e-7)
    # the comparison is not vacuous: ties and zeros everywhere, some calls, the all-zero gene at z = 0 and p = 1
    assert (np.abs(ours.layers["score"]) > 3).any() and (ours.layers["pval_adj"] < 0.05).any()
    assert (ours.layers["score"][:, 0] == 0).all() and (ours.layers["pval_adj"][:, 0] == 1).all()


@pytest.mark.parametrize("rest_includes_controls", [False, True])
def test_matches_scipy_ranksums_per_group(cells, rest_includes_controls):
    # scipy's rank-sum z (no tie correction, like scanpy's default) of each group vs the rest, on dense cells
    _, x, labels, cell_half, _ = cells
    ours = _ours(cells, "td", rest_includes_controls)
    dense = x.toarray()
    members = _tested(labels, cell_half, "td") + (["control"] if rest_includes_controls else [])
    pool = (cell_half == "td") & np.isin(labels, members)
    for p in ours.obs_names:
        group = pool & (labels == p)
        z = sps.ranksums(dense[group], dense[pool & ~group], axis=0).statistic
        np.testing.assert_allclose(ours[p].layers["score"][0], np.nan_to_num(z), rtol=1e-6, atol=1e-7)


def test_rows_follow_test_degs(cells):
    # same tested perturbations, same order as the stats-based test: deg_sensitivity swaps one for the other
    path, _, _, _, halves = cells
    stats = reduce_file(path, halves, dataset="toy", chunk_nonzeros=10**9)
    for half, with_controls in (("gt", False), ("td", True)):
        ours = _ours(cells, half, with_controls)
        theirs = degs.test_degs(stats, half, min_cells=MIN_CELLS, rest_includes_controls=with_controls)
        assert list(ours.obs_names) == list(theirs.obs_names) and list(ours.var_names) == list(theirs.var_names)
        assert ours.uns == {"half": half, "dataset": "toy"}
        assert {k: v.dtype for k, v in ours.layers.items()} == {"score": np.float32, "pval_adj": np.float32}


@pytest.mark.parametrize("chunk_nonzeros", [1, 37, 400])
def test_streaming_in_chunks_and_gene_blocks_is_exact(cells, chunk_nonzeros, tmp_path):
    # a budget below the half's nonzeros: row chunks, the counting pass and several gene blocks (1: one gene a block)
    path, x, *_ = cells
    whole = _ours(cells, "td", True)
    assert x.nnz > 400
    streamed = _ours(cells, "td", True, chunk_nonzeros=chunk_nonzeros)
    for layer in ("score", "pval_adj"):
        np.testing.assert_array_equal(streamed.layers[layer], whole.layers[layer])
    # a dense X (read in row blocks) gives the same too
    dense = ad.read_h5ad(path)
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    from_dense = _ours(cells, "td", True, chunk_nonzeros=chunk_nonzeros, path=tmp_path / "dense.h5ad")
    for layer in ("score", "pval_adj"):
        np.testing.assert_array_equal(from_dense.layers[layer], whole.layers[layer])


def test_negative_values_are_refused(cells, tmp_path):
    x = cells[1]
    bad = x.copy()
    bad.data = -bad.data
    ad.AnnData(bad, obs=pd.DataFrame(index=[f"c{i}" for i in range(x.shape[0])]),
               var=pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])])).write_h5ad(tmp_path / "bad.h5ad")
    with pytest.raises(PertcalInputError, match=r"dataset 'toy', file .*bad.h5ad: X holds negative values"):
        _ours(cells, "gt", False, path=tmp_path / "bad.h5ad")


def test_rest_with_controls_needs_control_cells(cells):
    halves = cells[4].copy()
    halves.loc[halves["perturbation"] == "control", "half"] = "gt"  # no control cell left in td
    with pytest.raises(PertcalInputError, match="toy: halves.parquet: no control cell in half 'td'"):
        wilcoxon_file(cells[0], halves, "td", dataset="toy", min_cells=MIN_CELLS, rest_includes_controls=True,
                      chunk_nonzeros=10**9)
