"""Dataset-wide gene spaces of the `gene_spaces` metric panel, one per dataset and shared by every fold:
the control cells' highly variable genes (one streamed pass over the processed cells) and the top principal
components of the control-centred gt-half pseudobulk (from the per-perturbation sums of stats.h5ad).
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from pertcal.cells import CellReader, read_part
from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError
from pertcal.qc import seurat_dispersion
from pertcal.reduce import accumulate_sums, half_means, pooled_means

log = logging.getLogger(__name__)

HVG_COLUMNS = ["gene", "means", "dispersions", "dispersions_norm", "rank", "highly_variable"]


# --- highly variable genes of the control cells ------------------------------------------------------------------


def expm1_mean_var(reader: CellReader, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(G,) mean and ddof=1 variance of expm1(x) over the `rows` ((cells,) bool, at least 2) of log1p data, by
    scanpy's own formula (Σy²/n − (Σy/n)²)·n/(n − 1).

    Σy and Σy² are accumulated in float64 value by value in storage order, so the result is the same bytes whatever
    the chunk size (pertcal.qc.expm1_moments merges chunk moments instead, which rounds differently per chunking).
    """
    G = reader.shape[1]
    total, total_sq = np.zeros((1, G)), np.zeros((1, G))
    for picked, x in reader.chunks(rows, label="control cells"):
        # scanpy's seurat flavour takes expm1 of the stored float32 values
        accumulate_sums(x.indptr, x.indices, np.expm1(x.data), np.zeros(len(picked), dtype=np.int64), total, total_sq)
    n = int(rows.sum())
    mean = total[0] / n
    return mean, (total_sq[0] / n - mean**2) * (n / (n - 1))


def control_hvgs(reader: CellReader, is_control: np.ndarray, genes: pd.Index, *, n_top: int) -> pd.DataFrame:
    """One row per gene (file order): scanpy's 'seurat' means, dispersions, dispersions_norm over the control cells
    (`is_control`, (cells,) bool), `rank` (1 = largest normalized dispersion; ties in gene order, NaN last) and
    `highly_variable` = rank ≤ n_top (min(n_top, G) genes: scPertEval's `hvg` space)."""
    table = seurat_dispersion(*expm1_mean_var(reader, is_control))
    norm = table["dispersions_norm"].to_numpy()
    # NaN (a gene constant over the control cells) last, as np.argsort(-x) in scPertEval puts it
    order = np.lexsort((np.arange(len(norm)), -np.nan_to_num(norm, nan=-np.inf)))
    rank = np.empty(len(norm), dtype=np.int64)
    rank[order] = np.arange(1, len(norm) + 1)
    table.insert(0, "gene", np.asarray(genes, dtype=str))
    table["rank"] = rank
    table["highly_variable"] = rank <= n_top
    return table[HVG_COLUMNS]


def control_hvgs_file(path, *, dataset: str, n_top: int, chunk_nonzeros: int) -> pd.DataFrame:
    """control_hvgs on a processed h5ad (obs `is_control`), its control cells streamed from disk."""
    obs, var = (read_part(path, key, dataset=dataset) for key in ("obs", "var"))
    if "is_control" not in obs:
        raise PertcalInputError(f"dataset {dataset!r}, file {path}: obs field 'is_control' is missing")
    is_control = obs["is_control"].to_numpy(dtype=bool)
    if is_control.sum() < 2:
        raise PertcalInputError(
            f"dataset {dataset!r}, file {path}: {int(is_control.sum())} control cell(s) (obs 'is_control'); the HVG "
            "space needs at least 2 for a variance"
        )
    with CellReader(path, dataset=dataset, max_nonzeros=chunk_nonzeros) as reader:
        table = control_hvgs(reader, is_control, var.index, n_top=n_top)
    log.info("dataset %s: %d of %d genes are control HVGs", dataset, int(table["highly_variable"].sum()), len(table))
    return table


# --- principal components of the control-centred pseudobulk ------------------------------------------------------


def pseudobulk_pcs(stats: ad.AnnData, *, n_components: int) -> ad.AnnData:
    """(K, G) loadings of the top K principal components of the rows (gt-half mean − control mean, the control
    pooled over both halves as scoring's Δctrl reference) of every non-control perturbation, as AnnData: X = sklearn PCA `components_` (exact SVD, sklearn's deterministic sign),
    obs = pc1…pcK with explained_variance and explained_variance_ratio, var = genes.

    K = min(n_components, rank of the centred rows): components past the rank carry no variance and have no
    defined direction. PCA centres the rows on their mean, so the control (a constant shift) does not change the
    loadings; it makes the rows the Δctrl profiles the metrics project.
    """
    gt = half_means(stats, "gt")
    delta = gt.drop(index=CONTROL, errors="ignore") - pooled_means(stats).loc[CONTROL]
    X = delta.to_numpy()
    P, G = X.shape
    pca = PCA(n_components=min(n_components, P, G), svd_solver="full").fit(X)
    singular = pca.singular_values_
    # numpy's matrix_rank tolerance
    tol = singular[0] * max(P, G) * np.finfo(np.float64).eps
    K = int((singular > tol).sum())
    if K == 0:
        raise PertcalInputError(f"stats: the {P} perturbations' gt-half means are all equal: no principal component")
    log.info("%d principal components of %d perturbations × %d genes explain %.3f of the variance", K, P, G,
             pca.explained_variance_ratio_[:K].sum())
    obs = pd.DataFrame(
        {"explained_variance": pca.explained_variance_[:K], "explained_variance_ratio": pca.explained_variance_ratio_[:K]},
        index=[f"pc{k + 1}" for k in range(K)],
    )
    return ad.AnnData(X=pca.components_[:K].copy(), obs=obs, var=pd.DataFrame(index=delta.columns.astype(str)),
                      uns={"n_perturbations": P, "rows": "gt-half mean minus control mean"})
