"""Perturbation strength: binned per-gene errors on hand cases, and the streamed titration means against a direct
numpy computation on small dense cells."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pertcal.cells import CellReader
from pertcal.strength import (
    binned_gene_errors,
    deg_stratum,
    gene_error_table,
    pvalue_bins,
    stratum_order,
    subsample_means,
    titration_draws,
    titration_errors,
)

EDGES = [0, 1e-5, 0.05, 1]


def test_pvalue_bins_edges_and_untested():
    p = np.array([0.0, 1e-6, 1e-5, 0.04, 0.05, 0.7, 1.0, np.nan])
    assert list(pvalue_bins(p, EDGES)) == [0, 0, 1, 1, 2, 2, 2, -1]


def test_binned_gene_errors_hand_case():
    truth = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    mean = np.array([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    dup = np.array([[2.0, 2.0, 3.0], [0.5, 3.0, np.nan]])
    pval = np.array([[0.5, 0.01, 1e-8], [0.2, 0.9, np.nan]])  # the last gene untested: left out
    got = binned_gene_errors(truth, mean, dup, pval, EDGES).set_index("bin")
    # bin 0: (p0, g2): mean err 4, dup 0; bin 1: (p0, g1): both 0; bin 2: (p0, g0) 0 vs 1, (p1, g0) 1 vs .25, (p1, g1) 1 vs 9
    assert got["n"].tolist() == [1, 1, 3]
    assert got["sse_mean"].tolist() == [4.0, 0.0, 2.0]
    assert got["sse_technical_duplicate"].tolist() == [0.0, 0.0, 10.25]
    assert got["closer_mean"].tolist() == [0, 0, 2] and got["closer_technical_duplicate"].tolist() == [1, 0, 1]
    table = gene_error_table(pd.concat([got.reset_index().assign(task="single")] * 2), EDGES)
    row = table[(table["p_low"] == 0.05) & (table["method"] == "technical_duplicate")].iloc[0]
    assert row["n"] == 6 and row["mse"] == pytest.approx(10.25 / 3) and row["fraction_closer"] == pytest.approx(1 / 3)
    assert row["p_bin"] == "[0.05, 1]" and row["task"] == "single"


def test_deg_strata():
    assert list(deg_stratum([0, 1, 9, 10, 99, 100, 5000], [0, 1, 10, 100])) == ["0", "1–9", "1–9", "10–99", "10–99", "≥100", "≥100"]
    assert stratum_order([0, 1, 10, 100]) == ["0", "1–9", "10–99", "≥100"]
    assert stratum_order([0, 5]) == ["0–4", "≥5"]


def _cells(tmp_path, rng):
    x = (rng.random((90, 12)) < 0.4) * rng.gamma(2.0, 1.0, size=(90, 12))
    ad.AnnData(X=sp.csr_matrix(x.astype(np.float32))).write_h5ad(tmp_path / "c.h5ad")
    return x.astype(np.float32).astype(np.float64)


def test_titration_means_equal_direct_numpy_and_draws_are_nested_and_seeded(tmp_path):
    rng = np.random.default_rng(0)
    x = _cells(tmp_path, rng)
    td = {"B": rng.choice(90, 23, replace=False), "A": rng.choice(90, 7, replace=False), "C": np.array([3, 5])}
    draws, indicator = titration_draws(td, 90, sizes=[5, 10, 20, 40], repeats=3, seed=42)
    # sizes above a perturbation's td cells are skipped: A has 5 only, B 5/10/20, C none
    assert draws.groupby("perturbation")["size"].unique().map(list).to_dict() == {"A": [5], "B": [5, 10, 20]}
    assert len(draws) == 3 * 1 + 3 * 3
    with CellReader(tmp_path / "c.h5ad", dataset="toy", max_nonzeros=60) as reader:
        got = subsample_means(reader, indicator)
    rows = indicator.tocsr()
    for i, d in draws.iterrows():
        cells = rows[[i]].indices
        assert cells.size == d["size"] and set(cells) <= set(td[d["perturbation"]])
        np.testing.assert_allclose(got[i], x[cells].mean(axis=0), rtol=1e-12)
    # nested: within a repeat the 5 cells are among the 10, and among the 20
    b0 = draws[(draws["perturbation"] == "B") & (draws["repeat"] == 0)].index
    sets = [set(rows[[i]].indices) for i in b0]
    assert sets[0] <= sets[1] <= sets[2]
    # repeats differ; the same seed gives the same draws whatever the other perturbations
    assert set(rows[[b0[0]]].indices) != set(rows[[b0[0] + 3]].indices)
    again, indicator2 = titration_draws({"B": td["B"]}, 90, sizes=[5, 10, 20, 40], repeats=3, seed=42)
    first = draws.index[draws["perturbation"] == "B"]
    assert (indicator2 != indicator[first]).nnz == 0


def test_titration_errors_against_hand_values():
    draws = pd.DataFrame({"perturbation": ["A", "B"], "n_td_cells": [8, 8], "size": [5, 5], "repeat": [0, 0]})
    means = np.array([[1.0, 1.0], [0.0, 4.0]])
    truth = pd.DataFrame([[0.0, 0.0], [0.0, 2.0]], index=["A", "B"], columns=["g0", "g1"])
    mean_pred = pd.DataFrame([[2.0, 0.0], [0.0, 0.0]], index=["B", "A"], columns=["g0", "g1"])  # other order: by name
    got = titration_errors(draws, means, truth, {"mean": mean_pred}, pd.Series({"A": 0, "B": 12}), [0, 1, 10])
    assert got["mse"].tolist() == [1.0, 2.0]
    assert got["mse_mean"].tolist() == [0.0, 4.0]
    assert got["stratum"].tolist() == ["0", "≥10"] and got["n_degs"].tolist() == [0, 12]


def test_config_edges_are_checked():
    from pertcal.strength import check_edges

    check_edges([0, 0.05, 1], "pvalue_edges", first=0, last=1)
    check_edges([0, 1, 10], "deg_strata", first=0)
    for bad in ([0, 0.05], [0.01, 1], [0, 0.5, 0.5, 1]):
        with pytest.raises(ValueError, match="'pvalue_edges'"):
            check_edges(bad, "pvalue_edges", first=0, last=1)
    with pytest.raises(ValueError, match="'deg_strata'"):
        check_edges([1, 10], "deg_strata", first=0)
