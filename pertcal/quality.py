"""Dataset quality: energy distances between perturbations (scPerturb's definition) and the spread of DEG counts and
cells per perturbation, then DRF against each quality measure.

scPerturb's `edist` (scperturb 0.1.0, the published calibration code's call `edist(adata, obs_key='condition')` after
`sc.pp.pca(adata, n_comps=50)`): in PCA space, with squared Euclidean distances and its sample correction,
E(X, Y) = 2·δ_XY − σ_X − σ_Y, δ_XY = mean over pairs (x, y) of ‖x − y‖², σ_X = Σ_{i≠j} ‖x_i − x_j‖² / (N(N − 1)).
Both are functions of each group's (n, Σz, Σ‖z‖²) in PCA space:
E = 2·(‖m_X − m_Y‖² − tr S_X / N_X − tr S_Y / N_Y), m the group mean and S its (ddof 1) covariance. The PCA is
scanpy's: the top principal axes of the centred cells over the highly variable genes, here the top eigenvectors of
the cells' covariance (Σx, Σxxᵀ from one streamed pass); a second pass projects the cells and keeps (n, Σz, Σ‖z‖²)
per perturbation, so memory is one chunk plus genes² and never grows with cells.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp
from scipy import stats as sps
from scipy.spatial.distance import pdist, squareform

from pertcal.cells import CellReader
from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

# dense float64 values held at once when a sparse chunk is densified for a matrix product (~32 MB)
DENSE_BLOCK_VALUES = 4_000_000


def choose_perturbations(perturbations, *, max_perturbations: int, seed: int) -> np.ndarray:
    """Sorted non-control perturbation names, a seeded random subset of `max_perturbations` where there are more.

    The published code subsamples to 300 perturbations before its cell-level e-distances (seed 42); here the
    cost is per perturbation pair, and the cap bounds the P × P table.
    """
    names = np.unique(np.asarray([str(p) for p in perturbations if str(p) != CONTROL]))
    if names.size <= max_perturbations:
        return names
    return np.sort(np.random.default_rng(seed).choice(names, size=max_perturbations, replace=False))


def _dense_blocks(x: sp.csr_matrix, cols: np.ndarray):
    """Yield (row offset, float64 dense rows of x[:, cols]) in blocks of at most DENSE_BLOCK_VALUES values."""
    x = x[:, cols]
    step = max(1, DENSE_BLOCK_VALUES // max(cols.size, 1))
    for a in range(0, x.shape[0], step):
        yield a, x[a : a + step].toarray().astype(np.float64)


def scatter_pass(reader: CellReader, rows: np.ndarray, cols: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """n, Σx (G,) and Σxxᵀ (G, G) float64 over the cells `rows` (bool mask) and genes `cols` (indices)."""
    total = np.zeros(cols.size)
    scatter = np.zeros((cols.size, cols.size))
    n = 0
    for _, x in reader.chunks(rows, label="quality: covariance"):
        for _, block in _dense_blocks(x, cols):
            n += block.shape[0]
            total += block.sum(axis=0)
            scatter += block.T @ block
    return n, total, scatter


def principal_axes(n: int, total: np.ndarray, scatter: np.ndarray, n_pcs: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean (G,) and the top `n_pcs` principal axes (G, K) of cells given by (n, Σx, Σxxᵀ), largest variance first.

    Each axis's sign is fixed (largest |loading| positive) so the output is deterministic; distances do not
    depend on it.
    """
    mean = total / n
    cov = (scatter - n * np.outer(mean, mean)) / (n - 1)
    g = cov.shape[0]
    k = min(n_pcs, g, n - 1)
    total_variance = np.trace(cov)
    # cov is this function's own temporary: let LAPACK work in it (genes² floats, 0.5 GB at 8,192 genes)
    values, vectors = scipy.linalg.eigh(cov, subset_by_index=[g - k, g - 1], overwrite_a=True, check_finite=False)
    axes = vectors[:, ::-1]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    log.info("PCA: %d axes explain %.1f%% of the variance", k, 100 * values.sum() / total_variance)
    return mean, axes


def projected_stats(
    reader: CellReader, rows: np.ndarray, codes: np.ndarray, n_groups: int, cols: np.ndarray, mean: np.ndarray,
    axes: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: n (P,), Σz (P, K) and Σ‖z‖² (P,) of the cells' PCA coordinates z = (x − mean)·axes.

    `rows`: bool mask of the cells used; `codes`: group code of every cell of the file (read only where `rows`).
    """
    n = np.zeros(n_groups, dtype=np.int64)
    sums = np.zeros((n_groups, axes.shape[1]))
    sumsq = np.zeros(n_groups)
    shift = mean @ axes
    for picked, x in reader.chunks(rows, label="quality: projection"):
        for a, block in _dense_blocks(x, cols):
            z = block @ axes - shift
            g = codes[picked[a : a + block.shape[0]]]
            indicator = sp.csr_matrix((np.ones(g.size), (g, np.arange(g.size))), shape=(n_groups, g.size))
            n += np.bincount(g, minlength=n_groups)
            sums += indicator @ z
            sumsq += indicator @ np.einsum("ij,ij->i", z, z)
    return n, sums, sumsq


def energy_distances(n: np.ndarray, sums: np.ndarray, sumsq: np.ndarray) -> np.ndarray:
    """(P, P) scPerturb energy distances (squared Euclidean, sample-corrected) from per-group (n, Σz, Σ‖z‖²).

    Zero on the diagonal, as scPerturb's; NaN for a group of one cell (its σ divides by N − 1 = 0).
    """
    n = n.astype(np.float64)
    means = sums / n[:, None]
    # tr S / N with S the ddof-1 covariance: (Σ‖z‖² − N‖m‖²) / (N (N − 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (sumsq - n * np.einsum("ij,ij->i", means, means)) / (n * (n - 1))
    # directly, not through the Gram form m_X·m_Y, which loses digits for close groups
    gaps = squareform(pdist(means, "sqeuclidean"))
    e = 2 * (gaps - spread[:, None] - spread[None, :])
    np.fill_diagonal(e, 0.0)
    return e


def dataset_energy_distances(
    path, obs: pd.DataFrame, genes: pd.DataFrame, *, dataset: str, n_pcs: int, max_perturbations: int, seed: int,
    chunk_nonzeros: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Energy distances of a processed h5ad: (pairs, per perturbation) tables.

    Cells: every cell of the chosen perturbations (both halves) and of the control, as the published code (which
    also keeps the control as a group). Genes: var `highly_variable` (scanpy's PCA default). Pairs: perturbation_a <
    perturbation_b, edist (control included as a group). Per perturbation (non-control): n_cells, mean_edist (to
    the other non-control perturbations, the published per-perturbation average), edist_to_control.
    """
    if "highly_variable" not in genes:
        raise PertcalInputError(f"dataset {dataset!r}, file {path}: var field 'highly_variable' is missing")
    cols = np.flatnonzero(genes["highly_variable"].to_numpy(dtype=bool))
    labels = obs["perturbation"].astype(str).to_numpy()
    chosen = choose_perturbations(np.unique(labels), max_perturbations=max_perturbations, seed=seed)
    groups = np.concatenate([[CONTROL], chosen])
    codes = pd.Index(groups).get_indexer(labels)
    rows = codes >= 0
    if not (codes == 0).any():
        raise PertcalInputError(f"dataset {dataset!r}, file {path}: no control cells ('{CONTROL}') in obs 'perturbation'")
    with CellReader(path, dataset=dataset, max_nonzeros=chunk_nonzeros) as reader:
        n_cells, total, scatter = scatter_pass(reader, rows, cols)
        mean, axes = principal_axes(n_cells, total, scatter, n_pcs)
        n, sums, sumsq = projected_stats(reader, rows, codes, groups.size, cols, mean, axes)
    e = energy_distances(n, sums, sumsq)
    a, b = np.triu_indices(groups.size, k=1)
    order = np.argsort(groups, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first = np.where(rank[a] < rank[b], a, b)
    second = np.where(rank[a] < rank[b], b, a)
    pairs = pd.DataFrame({"perturbation_a": groups[first], "perturbation_b": groups[second], "edist": e[a, b]})
    pairs = pairs.sort_values(["perturbation_a", "perturbation_b"], ignore_index=True)
    inner = e[1:, 1:]
    with np.errstate(invalid="ignore"):
        mean_edist = (inner.sum(axis=1) / (inner.shape[0] - 1)) if inner.shape[0] > 1 else np.full(chosen.size, np.nan)
    per_pert = pd.DataFrame(
        {"perturbation": chosen, "n_cells": n[1:], "mean_edist": mean_edist, "edist_to_control": e[1:, 0]}
    )
    per_pert.attrs["n_pcs"] = int(axes.shape[1])
    return pairs, per_pert


def coefficient_of_variation(values) -> float:
    """Population standard deviation over the mean (ddof 0, as the published code); NaN for a zero mean."""
    v = np.asarray(values, dtype=np.float64)
    m = v.mean() if v.size else np.nan
    return float(v.std() / m) if v.size and m > 0 else float("nan")


def quality_summary(pairs: pd.DataFrame, per_pert: pd.DataFrame, n_degs: pd.Series, cells: pd.Series, *, dataset: str) -> dict:
    """Per-dataset quality measures: e-distance between non-control perturbations (mean, median, sd over pairs),
    mean and CV of DEG counts (gt half, tested perturbations) and of cells per perturbation (non-control)."""
    inner = pairs.loc[(pairs["perturbation_a"] != CONTROL) & (pairs["perturbation_b"] != CONTROL), "edist"].to_numpy()
    return {
        "dataset": dataset,
        "n_perturbations_edist": int(len(per_pert)),
        "mean_edist": float(inner.mean()) if inner.size else float("nan"),
        "median_edist": float(np.median(inner)) if inner.size else float("nan"),
        "std_edist": float(inner.std()) if inner.size else float("nan"),
        "mean_degs": float(n_degs.mean()) if len(n_degs) else float("nan"),
        "cv_degs": coefficient_of_variation(n_degs),
        "n_perturbations": int(len(cells)),
        "cells_per_perturbation": float(cells.mean()) if len(cells) else float("nan"),
        "cv_cells": coefficient_of_variation(cells),
    }


# measure → axis label of the DRF-vs-quality figure
QUALITY_MEASURES = {
    "mean_edist": "mean energy distance between perturbations",
    "cv_degs": "CV of DEG counts per perturbation",
    "cv_cells": "CV of cells per perturbation",
    "mean_degs": "mean DEGs per perturbation",
}


def drf_vs_quality(mean_drf: pd.DataFrame, quality: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Points (dataset, metric, mean_drf, measure, value) and Spearman correlations (measure, metric, n, rho, p).

    `mean_drf`: pertcal.stats.summarize_drf rows (censored cells are NaN and left out); `quality`: one row per
    dataset. metric "all" pools every uncensored (dataset, metric) cell.
    """
    q = quality.melt(id_vars="dataset", value_vars=list(QUALITY_MEASURES), var_name="measure", value_name="value")
    points = mean_drf.loc[np.isfinite(mean_drf["mean_drf"]), ["dataset", "metric", "mean_drf"]].merge(q, on="dataset")
    points = points[np.isfinite(points["value"])].sort_values(["measure", "metric", "dataset"], ignore_index=True)
    rows = []
    for measure in QUALITY_MEASURES:
        sel = points[points["measure"] == measure]
        for metric, d in [("all", sel), *sel.groupby("metric", sort=True)]:
            rho, p = _spearman(d["value"].to_numpy(), d["mean_drf"].to_numpy())
            rows.append({"measure": measure, "metric": metric, "n": len(d), "rho": rho, "p": p})
    return points, pd.DataFrame(rows, columns=["measure", "metric", "n", "rho", "p"])


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and two-sided p; NaN with fewer than 3 points or a constant side."""
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    r = sps.spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)
