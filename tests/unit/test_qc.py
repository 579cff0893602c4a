"""Streaming QC against the in-memory scanpy recipe (filter, normalize, caps, HVG), hand-worked cases, and refusals."""

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from pertcal.cells import CellReader, read_part
from pertcal.harmonize import harmonize
from pertcal.io import PertcalInputError
from pertcal.qc import cap_cells, check_benchmarkable, duplicate_gene_mask, filter_small_perturbations, preprocess, seurat_hvg

PROCESSING = dict(
    min_genes_per_cell=3, min_cells_per_gene=2, min_cells_per_perturbation=12, max_control_cells=30,
    n_hvg=8, target_sum=1e4, duplicate_genes="error", n_folds_single=2, n_folds_combo=2,
)
HARMONIZE = dict(perturbation_column="perturbation", control_labels=["control"], combo_delimiter="+",
                 gene_symbol_column=None, harmonizers=[])


def make(labels, n_genes=40, seed=0, genes=None):
    """Raw counts: NB with a few sparse cells (so min_genes bites) and a rare gene (so min_cells bites)."""
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(2, 0.4, size=(len(labels), n_genes)).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = 0
    x[:3, 2:] = 0  # three cells expressing ≤ 2 genes
    x[3:, 1] = 0  # gene 1 expressed in ≤ 3 cells
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    var = pd.DataFrame(index=genes or [f"g{j}" for j in range(n_genes)])
    return ad.AnnData(sp.csr_matrix(x), obs=obs, var=var)


LABELS = ["control"] * 45 + ["g7"] * 30 + ["g2+g9"] * 20 + ["g4"] * 14 + ["g5"] * 5


def run(tmp_path, adata, *, values="auto", processing=None, max_nonzeros=97, name="raw.h5ad"):
    """Write `adata`, stream it through preprocess with a tiny chunk budget; (processed AnnData, report)."""
    raw = tmp_path / name
    adata.write_h5ad(raw)
    h = harmonize(read_part(raw, "obs", dataset="d"), read_part(raw, "var", dataset="d"), dataset="d",
                  source=str(raw), **HARMONIZE)
    out = tmp_path / f"processed_{name}"
    with CellReader(raw, dataset="d", max_nonzeros=max_nonzeros) as reader:
        report = preprocess(reader, h, out, dataset="d", source=str(raw), values=values, modality="CRISPRi",
                            cell_line="x", processing={**PROCESSING, **(processing or {})}, tasks=["single"],
                            seed=0)
    return ad.read_h5ad(out), report


def reference(adata, processing=PROCESSING, seed=0):
    """The published recipe in memory with scanpy (filter_cells, filter_genes, normalize_total, log1p, caps, HVG)."""
    a = adata.copy()
    sc.pp.filter_cells(a, min_genes=processing["min_genes_per_cell"])
    sc.pp.filter_genes(a, min_cells=processing["min_cells_per_gene"])
    sc.pp.normalize_total(a, target_sum=processing["target_sum"])
    sc.pp.log1p(a)
    counts = a.obs["perturbation"].value_counts()
    a = a[a.obs["perturbation"].isin(counts.index[counts >= processing["min_cells_per_perturbation"]])].copy()
    a = a[cap_cells(a.obs["perturbation"].to_numpy(), max_control_cells=processing["max_control_cells"], seed=seed)].copy()
    hvg = sc.pp.highly_variable_genes(a, n_top_genes=processing["n_hvg"], inplace=False)["highly_variable"].to_numpy()
    targets = {t for p in a.obs["perturbation"].unique() if p != "control" for t in p.split("+")}
    return a[:, hvg | a.var_names.isin(targets)].copy()


def test_streaming_equals_in_memory_scanpy_recipe(tmp_path):
    raw = make(LABELS)
    out, report = run(tmp_path, raw)
    ref = reference(raw)
    assert list(out.obs_names) == list(ref.obs_names) and list(out.var_names) == list(ref.var_names)
    np.testing.assert_allclose(out.X.toarray(), ref.X.toarray(), rtol=1e-6)
    assert report["after_filter_cells"] == len(LABELS) - 3 and report["after_filter_genes"] == 39
    assert report["perturbations"] == 3 and "g5" not in set(out.obs["perturbation"])
    assert not out.layers  # no counts layer: no stage reads it


@pytest.mark.parametrize("store", ["csc", "dense"])
def test_csc_and_dense_files_give_the_same_output(tmp_path, store):
    raw = make(LABELS)
    csr_out, _ = run(tmp_path, raw)
    other = raw.copy()
    other.X = sp.csc_matrix(raw.X) if store == "csc" else raw.X.toarray()
    out, _ = run(tmp_path, other, name=f"{store}.h5ad")
    assert list(out.var_names) == list(csr_out.var_names)
    np.testing.assert_array_equal(out.X.toarray(), csr_out.X.toarray())
    assert not list(tmp_path.glob(".*.csr.h5"))  # the CSC scratch copy is removed


def test_chunk_budget_does_not_change_output(tmp_path):
    raw = make(LABELS)
    small, _ = run(tmp_path, raw, max_nonzeros=50, name="a.h5ad")
    large, _ = run(tmp_path, raw, max_nonzeros=10**9, name="b.h5ad")
    np.testing.assert_array_equal(small.X.toarray(), large.X.toarray())


def test_seurat_hvg_equals_scanpy():
    rng = np.random.default_rng(3)
    a = ad.AnnData(sp.csr_matrix(rng.negative_binomial(2, 0.3, size=(300, 500)).astype(np.float32)))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    for n_top in (10, 100, 499):
        expected = sc.pp.highly_variable_genes(a, n_top_genes=n_top, inplace=False)["highly_variable"].to_numpy()
        x = a.X.copy()
        x.data = np.expm1(x.data)
        d = x.toarray().astype(np.float64)
        assert np.array_equal(seurat_hvg(d.mean(0), d.var(0, ddof=1), n_top), expected)


def test_small_perturbations_and_caps_by_hand():
    labels = np.array(["control"] * 40 + ["A"] * 30 + ["B"] * 14 + ["C"] * 11)
    assert list(np.unique(labels[filter_small_perturbations(labels, min_cells=12)])) == ["A", "B", "control"]
    labels = labels[:84]
    keep = cap_cells(labels, max_control_cells=25, seed=1)
    counts = pd.Series(labels[keep]).value_counts()
    cap = round(84 / 3)  # 28, control counted in the mean
    assert counts["A"] == cap and counts["B"] == 14 and counts["control"] == 25
    assert np.array_equal(keep, cap_cells(labels, max_control_cells=25, seed=1))


def test_log1p_input_accepted_and_target_sum_reported(tmp_path):
    raw = make(LABELS)
    sc.pp.normalize_total(raw, target_sum=1e4)
    sc.pp.log1p(raw)
    out, report = run(tmp_path, raw, processing={"min_genes_per_cell": 1, "min_cells_per_gene": 1})
    assert report["values"] == "log1p" and report["log1p_target_sum"] == pytest.approx(1e4, rel=1e-5)
    ref = pd.DataFrame(raw.X.toarray(), index=raw.obs_names, columns=raw.var_names)
    np.testing.assert_array_equal(out.X.toarray(), ref.loc[out.obs_names, out.var_names].to_numpy())


@pytest.mark.parametrize(
    "transform, declared, message",
    [
        (lambda x: np.where(x == 0, 0, np.nan), "auto", "NaN"),
        (lambda x: -x, "auto", "negative"),
        (lambda x: x + 0.5 * (x > 0), "counts", "declared as counts"),
        (lambda x: x / 50, "auto", "neither raw counts"),  # scaled counts: expm1 row sums are not one constant
        (lambda x: np.log2(1 + x), "auto", "neither raw counts"),
    ],
)
def test_bad_values_rejected_with_dataset_and_file(tmp_path, transform, declared, message):
    raw = make(LABELS)
    raw.X = sp.csr_matrix(transform(raw.X.toarray()).astype(np.float32))
    with pytest.raises(PertcalInputError, match=message) as err:
        run(tmp_path, raw, values=declared)
    assert "'d'" in str(err.value) and "raw.h5ad" in str(err.value)


def test_duplicate_genes_error_or_drop_all_copies():
    genes = pd.Index(["A", "B", "A", "C"])
    with pytest.raises(PertcalInputError, match="duplicate gene names"):
        duplicate_gene_mask(genes, policy="error", dataset="d", source="f")
    assert list(genes[duplicate_gene_mask(genes, policy="drop", dataset="d", source="f")]) == ["B", "C"]


def test_obs_columns_and_missing_targets_reported(tmp_path):
    out, report = run(tmp_path, make(LABELS[:-5] + ["g99"] * 14))
    obs = out.obs.drop_duplicates("perturbation").set_index("perturbation")
    assert obs.loc["g2+g9", "targets"] == "g2+g9" and obs.loc["g2+g9", "n_targets"] == 2
    assert obs.loc["control", "is_control"] and obs.loc["control", "n_targets"] == 0
    assert report["missing_targets"] == ["g99"]
    assert set(out.var_names[out.var["is_target"]]) == {"g7", "g2", "g9", "g4"}


@pytest.mark.parametrize(
    "labels, message",
    [
        (["control"] * 60, "0 perturbation"),
        (["control"] * 40 + ["g7"] * 20, "1 perturbation"),
    ],
)
def test_datasets_that_cannot_be_benchmarked_are_refused(tmp_path, labels, message):
    with pytest.raises(PertcalInputError, match=message):
        run(tmp_path, make(labels))


def test_no_target_among_genes_is_refused_with_the_fix(tmp_path):
    raw = make(LABELS, genes=[f"ENSG{j:05d}" for j in range(40)])
    with pytest.raises(PertcalInputError, match="gene_symbol_column"):
        run(tmp_path, raw)


def _corrupt(path, what):
    with h5py.File(path, "r+") as f:
        if what == "indices":
            f["X/indices"][:5] = 10**6
        else:
            f["X/indptr"][3] = 10**6


@pytest.mark.parametrize("what", ["indices", "indptr"])
def test_corrupt_sparse_structure_is_refused(tmp_path, what):
    path = tmp_path / "raw.h5ad"
    make(LABELS).write_h5ad(path)
    _corrupt(path, what)
    with pytest.raises(PertcalInputError, match="corrupt") as err:
        with CellReader(path, dataset="d") as reader:
            for _ in reader.chunks():
                pass
    assert "'d'" in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("content, message", [(b"", "empty"), (b"cell,gene\n1,2\n", "not an HDF5/AnnData file")])
def test_non_h5ad_files_are_refused_in_words(tmp_path, content, message):
    path = tmp_path / "raw.h5ad"
    path.write_bytes(content)
    with pytest.raises(PertcalInputError, match=message):
        read_part(path, "obs", dataset="d")


@pytest.mark.parametrize(
    "labels, tasks, message",
    [
        (["A", "B", "C"], ["single"], "3 perturbations remain after QC, too few for task 'single'.*= 4"),
        (["A", "B", "A+B"], ["combo"], "1 combinations remain after QC, too few for task 'combo'"),
    ],
)
def test_fewer_perturbations_than_a_tasks_folds_refused(labels, tasks, message):
    processing = {**PROCESSING, "n_folds_single": 4, "n_folds_combo": 2}
    with pytest.raises(PertcalInputError, match=message):
        check_benchmarkable(pd.Series(["control", *labels]), tasks=tasks, processing=processing, where="dataset 'd'")
    assert check_benchmarkable(pd.Series(["control", *labels, "D"]), tasks=["single"], processing=processing,
                               where="d") == 4
