"""QC, normalization, cell caps and gene selection, in the order the method applies them."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from pertcal.harmonize import CONTROL, targets_of
from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

# log1p(1e4 counts in one gene of a 1e4-normalized cell) ≈ 9.2; anything far above cannot be log1p-normalized data
MAX_LOG1P_VALUE = 20.0


def as_csr(x) -> sp.csr_matrix:
    """The matrix as CSR float32 (cells × genes)."""
    return sp.csr_matrix(x, dtype=np.float32)


def check_values(x: sp.csr_matrix, *, declared: str, dataset: str, source: str) -> str:
    """Return 'counts' or 'log1p' for a cells × genes matrix; raise on NaN, negatives or a kind that is neither."""
    data = x.data
    where = f"dataset {dataset!r}, file {source}: X"
    if not np.isfinite(data).all():
        raise PertcalInputError(f"{where} has {int((~np.isfinite(data)).sum())} NaN or infinite values")
    if (data < 0).any():
        raise PertcalInputError(f"{where} has {int((data < 0).sum())} negative values")
    integer = bool(np.all(data == np.round(data)))
    if declared == "counts":
        if not integer:
            raise PertcalInputError(f"{where} is declared as counts (values: counts) but holds non-integer values")
        return "counts"
    if integer and declared == "auto":
        return "counts"
    if data.size and data.max() > MAX_LOG1P_VALUE:
        raise PertcalInputError(
            f"{where} is neither raw counts (it has non-integer values) nor log1p-normalized data "
            f"(max {data.max():.1f} > {MAX_LOG1P_VALUE}); pass raw counts or log1p(normalized) values"
        )
    return "log1p"


def resolve_duplicate_genes(adata: ad.AnnData, *, policy: str, dataset: str, source: str) -> ad.AnnData:
    """Refuse duplicated gene names, or drop every copy of them (the paper's keep=False) when policy is 'drop'."""
    dup = adata.var_names.duplicated(keep=False)
    if not dup.any():
        return adata
    names = sorted(set(adata.var_names[dup]))
    if policy == "error":
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: duplicate gene names in var ({len(names)}: {', '.join(names[:10])}); "
            "set processing.duplicate_genes: drop to remove every copy"
        )
    log.info("dropping %d duplicated gene names (all copies)", len(names))
    return adata[:, ~dup].copy()


def filter_cells_genes(adata: ad.AnnData, *, min_genes: int, min_cells: int) -> ad.AnnData:
    """Drop cells expressing < min_genes genes, then genes expressed in < min_cells cells."""
    x = adata.X
    adata = adata[np.asarray((x > 0).sum(axis=1)).ravel() >= min_genes]
    x = adata.X
    return adata[:, np.asarray((x > 0).sum(axis=0)).ravel() >= min_cells].copy()


def normalize_log1p(adata: ad.AnnData, *, target_sum: float) -> ad.AnnData:
    """Keep counts in layers['counts']; X = log1p(counts normalized to target_sum per cell)."""
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p", None)
    return adata


def filter_small_perturbations(adata: ad.AnnData, *, min_cells: int) -> ad.AnnData:
    """Drop perturbations (control included) with fewer than min_cells cells."""
    counts = adata.obs["perturbation"].value_counts()
    return adata[adata.obs["perturbation"].isin(counts.index[counts >= min_cells])].copy()


def cap_cells(adata: ad.AnnData, *, max_control_cells: int, seed: int) -> ad.AnnData:
    """Downsample each perturbation to round(mean cells per perturbation, control counted) and control to max_control_cells."""
    labels = adata.obs["perturbation"].to_numpy()
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    cap = int(round(counts.mean()))
    rng = np.random.default_rng(seed)
    keep = np.zeros(adata.n_obs, dtype=bool)
    for k, label in enumerate(uniq):
        idx = np.flatnonzero(inverse == k)
        limit = max_control_cells if label == CONTROL else cap
        keep[np.sort(rng.choice(idx, size=limit, replace=False)) if idx.size > limit else idx] = True
    return adata[keep].copy()


def select_genes(adata: ad.AnnData, *, n_hvg: int) -> ad.AnnData:
    """Keep the union of the top n_hvg highly variable genes (scanpy, log data) and every perturbed target present."""
    hvg = sc.pp.highly_variable_genes(adata, n_top_genes=min(n_hvg, adata.n_vars), inplace=False)
    highly_variable = hvg["highly_variable"].to_numpy()
    targets = {t for p in adata.obs["perturbation"].unique() for t in targets_of(p)}
    is_target = adata.var_names.isin(targets)
    missing = sorted(targets - set(adata.var_names))
    if missing:
        log.info("%d perturbed targets are not among the genes: %s", len(missing), ", ".join(missing[:20]))
    out = adata[:, highly_variable | is_target].copy()
    out.var["highly_variable"] = highly_variable[highly_variable | is_target]
    out.var["is_target"] = is_target[highly_variable | is_target]
    return out


def annotate(adata: ad.AnnData, *, dataset: str, modality: str, cell_line: str) -> ad.AnnData:
    """Add the standard obs columns (perturbation, is_control, n_targets, targets) and dataset facts in uns."""
    labels = adata.obs["perturbation"].astype(str)
    adata.obs = pd.DataFrame(
        {
            "perturbation": labels.to_numpy(),
            "is_control": (labels == CONTROL).to_numpy(),
            "n_targets": labels.map(lambda p: len(targets_of(p))).to_numpy(dtype=np.int64),
            "targets": labels.map(lambda p: "+".join(targets_of(p))).to_numpy(),
        },
        index=adata.obs_names,
    )
    adata.uns.update({"dataset": dataset, "modality": modality, "cell_line": cell_line})
    return adata


def preprocess(
    adata: ad.AnnData,
    *,
    dataset: str,
    source: str,
    values: str,
    modality: str,
    cell_line: str,
    processing: dict,
    seed: int,
) -> tuple[ad.AnnData, dict]:
    """Harmonized raw AnnData → processed cells × selected genes (log1p in X, counts in layers) and a QC report."""
    adata.X = as_csr(adata.X)
    kind = check_values(adata.X, declared=values, dataset=dataset, source=source)
    adata = resolve_duplicate_genes(adata, policy=processing["duplicate_genes"], dataset=dataset, source=source)
    report = {"dataset": dataset, "values": kind, "input_cells": adata.n_obs, "input_genes": adata.n_vars}
    adata = filter_cells_genes(
        adata, min_genes=processing["min_genes_per_cell"], min_cells=processing["min_cells_per_gene"]
    )
    report.update(after_filter_cells=adata.n_obs, after_filter_genes=adata.n_vars)
    if kind == "counts":
        adata = normalize_log1p(adata, target_sum=processing["target_sum"])
    adata = filter_small_perturbations(adata, min_cells=processing["min_cells_per_perturbation"])
    if not (adata.obs["perturbation"] == CONTROL).any():
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: fewer than {processing['min_cells_per_perturbation']} control cells "
            "remain after QC"
        )
    report["after_filter_perturbations"] = adata.n_obs
    adata = cap_cells(adata, max_control_cells=processing["max_control_cells"], seed=seed)
    adata = select_genes(adata, n_hvg=processing["n_hvg"])
    adata = annotate(adata, dataset=dataset, modality=modality, cell_line=cell_line)
    report.update(
        cells=adata.n_obs,
        genes=adata.n_vars,
        perturbations=int((~adata.obs["is_control"]).groupby(adata.obs["perturbation"]).any().sum()),
        control_cells=int(adata.obs["is_control"].sum()),
    )
    return adata, report
