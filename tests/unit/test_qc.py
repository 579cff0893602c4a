"""QC, normalization, caps and gene selection on hand-built data with known answers; HVG vs scanpy."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from pertcal.io import PertcalInputError
from pertcal.qc import (
    cap_cells,
    check_values,
    filter_cells_genes,
    filter_small_perturbations,
    normalize_log1p,
    preprocess,
    resolve_duplicate_genes,
    select_genes,
)

PROCESSING = dict(
    min_genes_per_cell=3, min_cells_per_gene=2, min_cells_per_perturbation=12, max_control_cells=30,
    n_hvg=5, target_sum=1e4, duplicate_genes="error",
)


def make(labels, n_genes=10, seed=0, genes=None):
    rng = np.random.default_rng(seed)
    x = rng.poisson(2.0, size=(len(labels), n_genes)).astype(np.float32)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=genes or [f"g{j}" for j in range(n_genes)])
    return ad.AnnData(sp.csr_matrix(x), obs=obs, var=var)


def test_filter_cells_then_genes_by_hand():
    x = np.array([[1, 1, 1, 0], [1, 0, 0, 0], [2, 3, 0, 0], [5, 1, 0, 0]], dtype=np.float32)
    a = ad.AnnData(sp.csr_matrix(x), obs=pd.DataFrame(index=list("abcd")), var=pd.DataFrame(index=list("wxyz")))
    out = filter_cells_genes(a, min_genes=2, min_cells=2)
    # cell b expresses 1 gene → dropped; then y is expressed in 1 cell (a), z in none → dropped
    assert list(out.obs_names) == ["a", "c", "d"]
    assert list(out.var_names) == ["w", "x"]


def test_normalize_log1p_matches_closed_form():
    a = make(["control"] * 5)
    counts = a.X.toarray().copy()
    out = normalize_log1p(a, target_sum=1e4)
    expected = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4)
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-5)
    np.testing.assert_array_equal(out.layers["counts"].toarray(), counts)


def test_small_perturbations_dropped_control_included():
    a = make(["control"] * 11 + ["A"] * 12 + ["B"] * 13)
    assert sorted(filter_small_perturbations(a, min_cells=12).obs["perturbation"].unique()) == ["A", "B"]


def test_cap_cells_at_rounded_mean_and_control_cap():
    labels = ["control"] * 40 + ["A"] * 30 + ["B"] * 14 + ["C"] * 12
    out = cap_cells(make(labels), max_control_cells=25, seed=1)
    counts = out.obs["perturbation"].value_counts()
    cap = round((40 + 30 + 14 + 12) / 4)  # 24, control counted in the mean
    assert counts["A"] == cap and counts["B"] == 14 and counts["C"] == 12 and counts["control"] == 25
    again = cap_cells(make(labels), max_control_cells=25, seed=1)
    assert list(again.obs_names) == list(out.obs_names)


def test_select_genes_is_scanpy_hvg_union_targets():
    rng = np.random.default_rng(3)
    labels = ["control"] * 30 + ["g7"] * 20 + ["g2+g9"] * 20
    a = make(labels, n_genes=40)
    a.X = sp.csr_matrix(rng.negative_binomial(2, 0.3, size=a.shape).astype(np.float32))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    ref = sc.pp.highly_variable_genes(a.copy(), n_top_genes=8, inplace=False)
    expected = set(a.var_names[ref["highly_variable"].to_numpy()]) | {"g7", "g2", "g9"}
    out = select_genes(a, n_hvg=8)
    assert set(out.var_names) == expected
    assert set(out.var_names[out.var["is_target"]]) == {"g7", "g2", "g9"}


@pytest.mark.parametrize(
    "values, declared, message",
    [
        (np.array([[1.0, np.nan]]), "auto", "NaN"),
        (np.array([[1.0, -2.0]]), "auto", "negative"),
        (np.array([[1.5, 2.0]]), "counts", "declared as counts"),
        (np.array([[1.5, 200.0]]), "auto", "neither raw counts"),
    ],
)
def test_bad_values_rejected_with_dataset_and_file(values, declared, message):
    with pytest.raises(PertcalInputError, match=message) as err:
        check_values(sp.csr_matrix(values), declared=declared, dataset="toy", source="raw.h5ad")
    assert "toy" in str(err.value) and "raw.h5ad" in str(err.value)


def test_value_kinds_detected():
    assert check_values(sp.csr_matrix(np.array([[0.0, 3.0]])), declared="auto", dataset="d", source="f") == "counts"
    assert check_values(sp.csr_matrix(np.array([[0.0, 1.3]])), declared="auto", dataset="d", source="f") == "log1p"


def test_duplicate_genes_error_or_drop_all_copies():
    a = make(["control"] * 3, n_genes=4, genes=["A", "B", "A", "C"])
    with pytest.raises(PertcalInputError, match="duplicate gene names"):
        resolve_duplicate_genes(a, policy="error", dataset="d", source="f")
    assert list(resolve_duplicate_genes(a, policy="drop", dataset="d", source="f").var_names) == ["B", "C"]


def test_log1p_input_accepted_without_renormalizing():
    labels = ["control"] * 30 + ["g1"] * 15 + ["g2"] * 15
    a = make(labels, n_genes=12)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    before = pd.DataFrame(a.X.toarray(), index=a.obs_names, columns=a.var_names)
    out, report = preprocess(
        a.copy(), dataset="d", source="f", values="auto", modality="CRISPRi", cell_line="x",
        processing={**PROCESSING, "n_hvg": 12, "max_control_cells": 100}, seed=0,
    )
    assert report["values"] == "log1p" and "counts" not in out.layers
    np.testing.assert_allclose(
        out.X.toarray(), before.loc[out.obs_names, out.var_names].to_numpy(), rtol=1e-6
    )


def test_preprocess_obs_columns():
    labels = ["control"] * 30 + ["g1"] * 15 + ["g2+g3"] * 15 + ["g4"] * 5
    out, report = preprocess(
        make(labels, n_genes=12), dataset="d", source="f", values="auto", modality="CRISPRi", cell_line="x",
        processing={**PROCESSING, "max_control_cells": 100}, seed=0,
    )
    obs = out.obs.drop_duplicates("perturbation").set_index("perturbation")
    assert set(obs.index) == {"control", "g1", "g2+g3"}  # g4 has < 12 cells
    assert obs.loc["g2+g3", "targets"] == "g2+g3" and obs.loc["g2+g3", "n_targets"] == 2
    assert obs.loc["control", "is_control"] and obs.loc["control", "n_targets"] == 0
    assert report["perturbations"] == 2 and out.layers["counts"].shape == out.shape
