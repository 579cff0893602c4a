"""pertcal.degs against scanpy's rank_genes_groups, scipy's Welch test and statsmodels' BH."""

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scanpy as sc
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from pertcal import degs
from pertcal.io import PertcalInputError, parquet_writer, read_rows


def _stats_from_cells(X, perturbation, half, control="control"):
    """Build stats.h5ad from cells with plain numpy, one (perturbation, half) group at a time."""
    keys = pd.DataFrame({"perturbation": perturbation, "half": half}).drop_duplicates()
    rows, sums, sumsqs = [], [], []
    for p, h in keys.itertuples(index=False):
        x = X[(perturbation == p) & (half == h)].astype(np.float64)
        rows.append({"perturbation": p, "half": h, "n_cells": len(x), "is_control": p == control})
        sums.append(x.sum(axis=0))
        sumsqs.append((x**2).sum(axis=0))
    obs = pd.DataFrame(rows)
    obs.index = obs["perturbation"] + "|" + obs["half"]
    n = obs["n_cells"].to_numpy()[:, None]
    stats = ad.AnnData(X=np.array(sums) / n, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]))
    stats.layers["sum"] = np.array(sums)
    stats.layers["sumsq"] = np.array(sumsqs)
    stats.uns["dataset"] = "toy"
    return stats


def _long(stats, half, **kwargs):
    """The long table test_degs streams to its sink, as one DataFrame (names as plain strings)."""
    tables = []
    degs.test_degs(stats, half, sink=tables.append, **kwargs)
    table = pa.concat_tables(tables).to_pandas()
    return table.astype({"perturbation": str, "gene": str})


@pytest.fixture(scope="module")
def cells():
    """200 perturbations of 3-16 cells plus 60 controls, 300 log1p-like genes, two halves."""
    rng = np.random.default_rng(0)
    n_perts, n_genes = 200, 300
    sizes = rng.integers(8, 17, n_perts)
    sizes[:10] = 3  # too few cells in either half: never tested
    labels = np.concatenate([np.repeat([f"p{i:03d}" for i in range(n_perts)], sizes), np.repeat("control", 60)])
    rate = rng.gamma(0.6, 1.5, n_genes)
    effect = np.exp(rng.normal(0, 0.4, (n_perts + 1, n_genes)))
    group = np.concatenate([np.repeat(np.arange(n_perts), sizes), np.full(60, n_perts)])
    counts = rng.poisson(rate * effect[group])
    # Per-cell size factors, as after library-size normalization: equal counts rarely give equal values.
    X = np.log1p(counts * rng.uniform(0.5, 2.0, (len(labels), 1)))
    X[:, :5] = 0.0  # unexpressed genes: zero variance in every group and in the rest
    X[labels == "p020", 5] = 0.0  # zero variance in one group only
    half = np.where(rng.random(len(labels)) < 0.5, "gt", "td")
    return X, labels, half


def _tested(labels, half, h):
    """The half's perturbations with at least 4 cells (control excluded), sorted: those test_degs reports."""
    counts = pd.Series(labels[half == h]).value_counts()
    return sorted(p for p, c in counts.items() if c >= 4 and p != "control")


def _scanpy_reference(X, labels, half, h, tested, *, with_controls=False):
    """scanpy's rank_genes_groups of the half's `tested` perturbations against the rest (t-test_overestim_var,
    Benjamini-Hochberg), the rest holding the half's control cells too when `with_controls`; control not reported."""
    groups = [*tested, "control"] if with_controls else list(tested)
    keep = (half == h) & np.isin(labels, groups)
    adata = ad.AnnData(
        X=X[keep].copy(),
        obs=pd.DataFrame({"perturbation": pd.Categorical(labels[keep])}, index=[str(i) for i in range(keep.sum())]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]),
    )
    sc.tl.rank_genes_groups(
        adata, "perturbation", groups=groups, reference="rest", method="t-test_overestim_var",
        n_genes=adata.n_vars, corr_method="benjamini-hochberg",
    )
    ref = sc.get.rank_genes_groups_df(adata, group=None).rename(columns={"group": "perturbation", "names": "gene"})
    return ref[ref["perturbation"] != "control"].astype({"perturbation": str})


def _assert_matches_scanpy(ours, ref):
    """Every (perturbation, gene) in both tables, with the same score, p, adjusted p and log fold change."""
    merged = ours.merge(ref, on=["perturbation", "gene"], how="outer", validate="one_to_one", indicator=True)
    assert (merged["_merge"] == "both").all()
    np.testing.assert_allclose(merged["score"], merged["scores"], rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(merged["pval"], merged["pvals"], rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(merged["pval_adj"], merged["pvals_adj"], rtol=1e-6, atol=1e-300)
    np.testing.assert_allclose(merged["logfc"], merged["logfoldchanges"], rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # scanpy's own frame building
@pytest.mark.parametrize("block_size", [None, 7])  # one block, and blocks of 7 of the ~180 tested perturbations
def test_matches_scanpy_rank_genes_groups(cells, block_size):
    X, labels, half = cells
    h = "td"  # either half; test_other_half_cells_are_not_in_rest covers the split
    stats = _stats_from_cells(X, labels, half)
    ours = _long(stats, h, block_size=block_size)

    tested = _tested(labels, half, h)
    assert len(tested) >= 150
    assert sorted(ours["perturbation"].unique()) == tested
    assert list(ours.columns) == ["perturbation", "gene", "score", "logfc", "pval", "pval_adj"]

    _assert_matches_scanpy(ours, _scanpy_reference(X, labels, half, h, tested))
    # Unexpressed genes: NaN score and p become 0 and 1 (scanpy's convention).
    zero = ours[ours["gene"].isin(["g0", "g1", "g2", "g3", "g4"])]
    assert (zero["score"] == 0).all() and (zero["pval"] == 1).all()


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # scanpy's own frame building
def test_rest_with_controls_matches_scanpy_on_cells_with_controls(cells):
    # The published td-half recipe of the combination datasets: rank_genes_groups over the half's tested
    # perturbations AND its control cells (reference "rest"), control itself not reported.
    X, labels, half = cells
    h = "td"
    stats = _stats_from_cells(X, labels, half)
    ours = _long(stats, h, rest_includes_controls=True)
    tested = _tested(labels, half, h)
    assert sorted(ours["perturbation"].unique()) == tested

    _assert_matches_scanpy(ours, _scanpy_reference(X, labels, half, h, tested, with_controls=True))
    # and the controls do change the test: without them the scores differ
    without = _long(stats, h).set_index(["perturbation", "gene"])["score"]
    assert not np.allclose(ours.set_index(["perturbation", "gene"])["score"].reindex(without.index), without)


def test_rest_with_controls_needs_the_control_row(cells):
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    no_controls = stats[~stats.obs["is_control"].to_numpy()].copy()
    with pytest.raises(PertcalInputError, match="toy: stats.h5ad: no control row in half 'td'"):
        degs.test_degs(no_controls, "td", rest_includes_controls=True)


def test_row_order_follows_stats_then_var(cells):
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    ours = _long(stats, "gt")
    tested_in_stats_order = [
        p for p, hh, n, c in stats.obs[["perturbation", "half", "n_cells", "is_control"]].itertuples(index=False)
        if hh == "gt" and n >= 4 and not c
    ]
    assert list(ours["perturbation"].unique()) == tested_in_stats_order
    assert list(ours["gene"].iloc[: stats.n_vars]) == list(stats.var_names)


def test_hand_worked_three_groups():
    # gene 0 by hand; gene 1 via scipy's Welch test from summary statistics.
    a = np.array([[1.0, 0.5], [2.0, 0.7], [3.0, 0.2], [4.0, 0.9]])
    b = np.array([[0.0, 1.5], [0.0, 1.1], [1.0, 1.3], [1.0, 1.9], [2.0, 1.2]])
    c = np.array([[1.0, 0.0], [1.0, 0.3], [1.0, 0.1], [1.0, 0.2]])
    X = np.vstack([a, b, c])
    labels = np.array(["A"] * 4 + ["B"] * 5 + ["C"] * 4)
    stats = _stats_from_cells(X, labels, np.full(len(labels), "gt"))
    out = _long(stats, "gt").set_index(["perturbation", "gene"])

    # A vs rest (B ∪ C) on gene 0: m_A = 2.5, v_A = 5/3; rest = [0,0,1,1,2,1,1,1,1], m = 8/9, v = (10 - 64/9)/8.
    m_a, v_a, m_r, v_r = 2.5, 5 / 3, 8 / 9, (10 - 64 / 9) / 8
    t = (m_a - m_r) / np.sqrt(v_a / 4 + v_r / 4)
    df = (v_a / 4 + v_r / 4) ** 2 / ((v_a / 4) ** 2 / 3 + (v_r / 4) ** 2 / 3)
    assert out.loc[("A", "g0"), "score"] == pytest.approx(t, rel=1e-12)
    assert out.loc[("A", "g0"), "pval"] == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-10)
    assert out.loc[("A", "g0"), "logfc"] == pytest.approx(
        np.log2((np.expm1(m_a) + 1e-9) / (np.expm1(m_r) + 1e-9)), rel=1e-12
    )

    for name, grp in {"A": a, "B": b, "C": c}.items():
        rest = np.vstack([g for k, g in {"A": a, "B": b, "C": c}.items() if k != name])
        n = len(grp)
        t_ref, p_ref = sps.ttest_ind_from_stats(
            grp.mean(0), grp.std(0, ddof=1), n, rest.mean(0), rest.std(0, ddof=1), n, equal_var=False
        )
        got = out.loc[name].loc[["g0", "g1"]]
        np.testing.assert_allclose(got["score"], t_ref, rtol=1e-12)
        np.testing.assert_allclose(got["pval"], p_ref, rtol=1e-10)
        np.testing.assert_allclose(got["pval_adj"], multipletests(p_ref, method="fdr_bh")[1], rtol=1e-10)


@pytest.mark.parametrize("block_size", [None, 7])
def test_plain_welch_matches_scipy_ttest_on_cells(cells, block_size):
    # scipy's Welch test on the cells themselves (each side with its own n), BH by statsmodels.
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    ours = _long(stats, "gt", block_size=block_size, method="welch").set_index(["perturbation", "gene"])
    gt = half == "gt"
    counts = pd.Series(labels[gt]).value_counts()
    tested = sorted(p for p, c in counts.items() if c >= 4 and p != "control")
    for p in tested[::25] + ["p020"]:
        group, rest = X[gt & (labels == p)], X[gt & np.isin(labels, tested) & (labels != p)]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_ref, p_ref = sps.ttest_ind(group, rest, equal_var=False)
        t_ref, p_ref = np.nan_to_num(t_ref, nan=0.0), np.nan_to_num(p_ref, nan=1.0)
        got = ours.loc[p].loc[[f"g{j}" for j in range(X.shape[1])]]
        np.testing.assert_allclose(got["score"], t_ref, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(got["pval"], p_ref, rtol=1e-7, atol=1e-300)
        np.testing.assert_allclose(got["pval_adj"], multipletests(p_ref, method="fdr_bh")[1], rtol=1e-7, atol=1e-300)
    # the pipeline's default differs: overestim_var divides the rest's variance by the group's n
    default = _long(stats, "gt").set_index(["perturbation", "gene"])
    assert not np.allclose(default["score"], ours["score"])
    with pytest.raises(ValueError, match="welch"):
        degs.test_degs(stats, "gt", method="wilcoxon")


def test_min_cells_and_control_are_excluded_from_groups_and_rest():
    rng = np.random.default_rng(1)
    sizes = {"A": 5, "B": 6, "small": 3, "control": 20}
    labels = np.concatenate([np.repeat(k, v) for k, v in sizes.items()])
    X = rng.normal(1.0, 0.5, (len(labels), 4))
    X[labels == "small"] += 50.0  # would dominate the rest if wrongly included
    X[labels == "control"] -= 50.0
    stats = _stats_from_cells(X, labels, np.full(len(labels), "gt"))
    out = _long(stats, "gt")
    assert list(out["perturbation"].unique()) == ["A", "B"]

    a, b = X[labels == "A"], X[labels == "B"]
    t_ref, p_ref = sps.ttest_ind_from_stats(
        a.mean(0), a.std(0, ddof=1), 5, b.mean(0), b.std(0, ddof=1), 5, equal_var=False
    )
    got = out[out["perturbation"] == "A"]
    np.testing.assert_allclose(got["score"], t_ref, rtol=1e-10)
    np.testing.assert_allclose(got["pval"], p_ref, rtol=1e-10)

    assert list(degs.test_degs(stats, "gt", min_cells=3).obs_names) == ["A", "B", "small"]


def test_other_half_cells_are_not_in_rest():
    rng = np.random.default_rng(2)
    labels = np.repeat(["A", "B", "C"], 10)
    half = np.tile(np.repeat(["gt", "td"], 5), 3)
    X = rng.normal(2.0, 1.0, (30, 3))
    X[half == "td"] += 10.0
    stats = _stats_from_cells(X, labels, half)
    got = _long(stats, "gt")
    gt = half == "gt"
    a, rest = X[gt & (labels == "A")], X[gt & (labels != "A")]
    t_ref, _ = sps.ttest_ind_from_stats(
        a.mean(0), a.std(0, ddof=1), 5, rest.mean(0), rest.std(0, ddof=1), 5, equal_var=False
    )
    np.testing.assert_allclose(got[got["perturbation"] == "A"]["score"], t_ref, rtol=1e-10)


def test_constant_nonzero_group_has_zero_variance():
    # For five cells of this value Σx² − n·m² rounds to −8.9e-16: unclipped, sqrt gives NaN and the score 0.
    c = 0.9755369922840251
    rng = np.random.default_rng(4)
    labels = np.repeat(["A", "B", "C"], [5, 6, 7])
    X = rng.normal(1.0, 0.3, (18, 1))
    X[labels == "A"] = c
    stats = _stats_from_cells(X, labels, np.full(18, "gt"))
    s, ss = stats.layers["sum"][0, 0], stats.layers["sumsq"][0, 0]
    assert ss - s * (s / 5) < 0
    got = _long(stats, "gt").set_index("perturbation")
    rest = X[labels != "A", 0]
    t = (c - rest.mean()) / np.sqrt(rest.var(ddof=1) / 5)
    assert got.loc["A", "score"] == pytest.approx(t, rel=1e-9)
    assert got.loc["A", "pval"] == pytest.approx(2 * sps.t.sf(abs(t), 4), rel=1e-8)


def test_bh_rows_equals_statsmodels_with_ties():
    rng = np.random.default_rng(3)
    p = rng.random((20, 50))
    p[:, :10] = 0.02  # ties
    p[:, 10] = 1.0
    expected = np.vstack([multipletests(row, method="fdr_bh")[1] for row in p])
    np.testing.assert_array_equal(degs.bh_rows(p), expected)


def test_missing_layer_raises_input_error(cells):
    X, labels, half = cells
    stats = _stats_from_cells(X[:50], labels[:50], half[:50])
    del stats.layers["sumsq"]
    with pytest.raises(PertcalInputError, match="toy: stats.h5ad: layer 'sumsq'"):
        degs.test_degs(stats, "gt")


def test_matrix_agrees_with_long_table_by_name(cells):
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    tables = []
    matrix = degs.test_degs(stats, "gt", block_size=11, sink=tables.append)
    long = pa.concat_tables(tables).to_pandas()
    assert list(matrix.obs_names) == list(long["perturbation"].unique())
    assert list(matrix.var_names) == list(stats.var_names)
    assert set(matrix.layers) == set(degs.MATRIX_LAYERS)
    for layer in degs.MATRIX_LAYERS:
        assert matrix.layers[layer].dtype == np.float32
        wide = long.pivot(index="perturbation", columns="gene", values=layer)
        # reversed orders on purpose: the comparison goes through names, not positions
        perts, genes = matrix.obs_names[::-1], matrix.var_names[::-1]
        np.testing.assert_array_equal(
            degs.deg_matrix(matrix, perts, genes, layer, np.nan),
            wide.loc[perts, genes].to_numpy().astype(np.float32).astype(np.float64),
        )


def test_long_parquet_is_byte_identical_across_writes_and_reads_as_strings(cells, tmp_path):
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    paths = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for path in paths:
        with parquet_writer(path, degs.DEG_SCHEMA, statistics=["perturbation"]) as table:
            degs.test_degs(stats, "td", block_size=13, sink=table.write_table)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    back = pd.read_parquet(paths[0])
    assert list(back.columns) == degs.DEG_SCHEMA.names
    assert back["perturbation"].dtype == object and back["gene"].dtype == object
    pd.testing.assert_frame_equal(back, _long(stats, "td"))


def test_matrix_file_roundtrip_and_row_reads(cells, tmp_path):
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    matrix = degs.test_degs(stats, "gt")
    matrix.write_h5ad(tmp_path / "degs_gt.h5ad")
    some = list(matrix.obs_names[[40, 3, 17]])
    part = read_rows(tmp_path / "degs_gt.h5ad", where={"perturbation": some}, layers=("pval_adj",))
    assert set(part.layers) == {"pval_adj"} and sorted(part.obs_names) == sorted(some)
    np.testing.assert_array_equal(
        degs.deg_matrix(part, some, matrix.var_names, "pval_adj", np.nan),
        degs.deg_matrix(matrix, some, matrix.var_names, "pval_adj", np.nan),
    )


def test_progress_is_logged_per_block(cells, caplog):
    X, labels, half = cells
    stats = _stats_from_cells(X, labels, half)
    with caplog.at_level(logging.INFO, logger="pertcal.degs"):
        matrix = degs.test_degs(stats, "gt", block_size=50)
    lines = [r.getMessage() for r in caplog.records if r.name == "pertcal.degs"]
    total = matrix.n_obs
    assert len(lines) == -(-total // 50)
    assert lines[0].startswith(f"DEGs: 50 / {total} perturbations") and "ETA" in lines[0]
    assert lines[-1].startswith(f"DEGs: {total} / {total}")


def _toy_degs():
    """A DEG matrix file's contents: perturbations B, A; genes in another order than the queries below."""
    long = pd.DataFrame(
        {
            "perturbation": ["B", "B", "B", "A", "A", "A"],
            "gene": ["g2", "g0", "g1", "g1", "g2", "g0"],
            "score": [-4.0, 1.0, 2.0, 3.0, np.nan, 0.0],
            "pval_adj": [0.01, 0.5, 0.04, 0.049, 0.05, np.nan],
        }
    )
    perts, genes = ["B", "A"], ["g2", "g0", "g1"]
    layers = {c: long.pivot(index="perturbation", columns="gene", values=c).loc[perts, genes].to_numpy() for c in ("score", "pval_adj")}
    return ad.AnnData(obs=pd.DataFrame({"perturbation": perts}, index=perts), var=pd.DataFrame(index=genes), layers=layers)


def test_deg_matrix_aligns_by_name():
    m = degs.deg_matrix(_toy_degs(), ["A", "C", "B"], ["g0", "g1", "g2"], "score", -1.0)
    np.testing.assert_array_equal(m, [[0.0, 3.0, np.nan], [-1.0, -1.0, -1.0], [1.0, 2.0, -4.0]])


def test_deg_weights_by_hand():
    w = degs.deg_weights(_toy_degs(), ["A", "C", "B"], ["g0", "g1", "g2"])
    # A: |t| = 0, 3, NaN -> 0, 1, 0.  B: |t| = 1, 2, 4 -> 0, (1/3)², 1.  C untested -> 0.
    np.testing.assert_allclose(w, [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1 / 9, 1.0]])


def test_deg_weights_constant_scores_are_zero():
    table = ad.AnnData(obs=pd.DataFrame(index=["A"]), var=pd.DataFrame(index=["g0", "g1"]), layers={"score": np.array([[2.0, -2.0]])})
    np.testing.assert_array_equal(degs.deg_weights(table, ["A"], ["g0", "g1"]), [[0.0, 0.0]])


def test_deg_mask_and_interpolation_alpha():
    t = _toy_degs()
    mask = degs.deg_mask(t, ["A", "C", "B"], ["g0", "g1", "g2"])
    np.testing.assert_array_equal(mask, [[False, True, False], [False, False, False], [False, True, True]])
    alpha = degs.interpolation_alpha(t, ["A", "C", "B"], ["g0", "g1", "g2"])
    np.testing.assert_allclose(alpha, [[0.0, 0.951, 0.95], [0.0, 0.0, 0.0], [0.5, 0.96, 0.99]])
