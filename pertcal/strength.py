"""Perturbation strength: per gene, where the mean baseline is a better estimate of the ground-truth half than the
technical duplicate (by the gene's gt-half DEG significance), and how many cells a technical duplicate needs to
reach the mean baseline (cell titration), per stratum of DEG counts.

The titration draws, for every (perturbation, repeat), one seeded permutation of the perturbation's td-half cells
and takes its first s cells for each size s (nested subsamples, so a repeat is one titration curve); the subsample
means of every (perturbation, size, repeat) come from one streamed pass over the cells as a sparse indicator
(draws × cells, weights 1/s) times each chunk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertcal.cells import CellReader
from pertcal.io import PertcalInputError
from pertcal.stats import comparison_rng

METHODS = ("mean", "technical_duplicate")


def check_edges(edges, key: str, *, first: float, last: float | None = None) -> None:
    """Refuse config bin edges (`analyses.<key>`) that do not increase strictly from `first` (to `last`)."""
    if edges[0] != first or (last is not None and edges[-1] != last) or any(b <= a for a, b in zip(edges, edges[1:])):
        bounds = f"from {first} to {last}" if last is not None else f"from {first}"
        raise PertcalInputError(f"config 'analyses' field {key!r}: {list(edges)} must increase strictly {bounds}")


def _bin_labels(edges) -> list[str]:
    return [f"[{lo:g}, {hi:g}{']' if i == len(edges) - 2 else ')'}" for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]


def pvalue_bins(pval_adj: np.ndarray, edges) -> np.ndarray:
    """Bin index of each adjusted p in `edges` (increasing, first 0, last 1; bins [e_i, e_i+1), the last closed);
    −1 for NaN (an untested perturbation)."""
    idx = np.clip(np.searchsorted(np.asarray(edges, dtype=np.float64), pval_adj, side="right") - 1, 0, len(edges) - 2)
    return np.where(np.isnan(pval_adj), -1, idx)


def binned_gene_errors(truth: np.ndarray, mean: np.ndarray, duplicate: np.ndarray, pval_adj: np.ndarray, edges) -> pd.DataFrame:
    """Sums per adjusted-p bin over (perturbation, gene) values of (P, G) arrays: n, squared errors of the mean
    baseline and of the technical duplicate against the truth, and how often each is strictly closer.

    Columns: bin (int), n, sse_mean, sse_technical_duplicate, closer_mean, closer_technical_duplicate.
    """
    b = pvalue_bins(pval_adj, edges).ravel()
    err_mean = ((mean - truth) ** 2).ravel()
    err_dup = ((duplicate - truth) ** 2).ravel()
    keep = b >= 0
    b, err_mean, err_dup = b[keep], err_mean[keep], err_dup[keep]
    k = len(edges) - 1
    return pd.DataFrame({
        "bin": np.arange(k),
        "n": np.bincount(b, minlength=k),
        "sse_mean": np.bincount(b, err_mean, minlength=k),
        "sse_technical_duplicate": np.bincount(b, err_dup, minlength=k),
        "closer_mean": np.bincount(b, err_mean < err_dup, minlength=k).astype(np.int64),
        "closer_technical_duplicate": np.bincount(b, err_dup < err_mean, minlength=k).astype(np.int64),
    })


def gene_error_table(sums: pd.DataFrame, edges) -> pd.DataFrame:
    """Long table from summed binned_gene_errors rows (any identifying columns before `bin`): per bin and method,
    p_low, p_high, bin label, n, mse (mean squared error per perturbation × gene) and fraction_closer."""
    keys = [c for c in sums.columns if c not in ("bin", "n", "sse_mean", "sse_technical_duplicate", "closer_mean", "closer_technical_duplicate")]
    total = sums.groupby([*keys, "bin"], sort=True, as_index=False).sum()
    labels = _bin_labels(edges)
    rows = []
    for method in METHODS:
        with np.errstate(invalid="ignore", divide="ignore"):
            part = total[[*keys, "bin", "n"]].assign(
                method=method,
                mse=total[f"sse_{method}"] / total["n"],
                fraction_closer=total[f"closer_{method}"] / total["n"],
            )
        rows.append(part)
    out = pd.concat(rows, ignore_index=True)
    out.insert(len(keys), "p_low", np.asarray(edges, dtype=float)[out["bin"]])
    out.insert(len(keys) + 1, "p_high", np.asarray(edges, dtype=float)[out["bin"] + 1])
    out.insert(len(keys) + 2, "p_bin", np.asarray(labels)[out["bin"]])
    return out.drop(columns="bin").sort_values([*keys, "p_low", "method"], ignore_index=True)


def titration_draws(
    td_cells: dict[str, np.ndarray], n_cells: int, *, sizes, repeats: int, seed: int,
) -> tuple[pd.DataFrame, sp.csc_matrix]:
    """Draws (perturbation, n_td_cells, size, repeat) and their (D, n_cells) indicator with weights 1/size.

    `td_cells`: perturbation → row indices of its td-half cells in the processed file. Sizes above a
    perturbation's td cells are skipped. The permutation of each (perturbation, repeat) is seeded by the run's
    seed and the names, so it does not depend on the other perturbations.
    """
    rows, draws, cols, weights = [], [], [], []
    for perturbation in sorted(td_cells):
        cells = np.sort(np.asarray(td_cells[perturbation], dtype=np.int64))
        for repeat in range(repeats):
            order = comparison_rng(seed, "titration", perturbation, str(repeat)).permutation(cells)
            for size in sorted(s for s in sizes if s <= cells.size):
                draws.append((perturbation, cells.size, size, repeat))
                rows.append(np.full(size, len(draws) - 1))
                cols.append(order[:size])
                weights.append(np.full(size, 1.0 / size))
    table = pd.DataFrame(draws, columns=["perturbation", "n_td_cells", "size", "repeat"])
    if not draws:
        return table, sp.csc_matrix((0, n_cells))
    indicator = sp.csc_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(len(draws), n_cells)
    )
    return table.astype({"n_td_cells": np.int64, "size": np.int64, "repeat": np.int64}), indicator


def subsample_means(reader: CellReader, indicator: sp.csc_matrix) -> np.ndarray:
    """(D, G) float64 means of every draw: one pass over the cells the draws use, a chunk at a time."""
    out = np.zeros((indicator.shape[0], reader.shape[1]))
    used = np.diff(indicator.indptr) > 0
    for picked, x in reader.chunks(used, label="titration"):
        part = indicator[:, picked].tocsr() @ x.astype(np.float64)
        # only the draws with cells in this chunk: the dense temporary stays below the accumulator's size
        touched = np.flatnonzero(np.diff(part.indptr))
        out[touched] += part[touched].toarray()
    return out


def deg_stratum(n_degs, edges) -> np.ndarray:
    """Stratum label of each DEG count: strata start at `edges` (increasing, first 0), e.g. '0', '1–9', '≥100'."""
    edges = [int(e) for e in edges]
    labels = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] - 1 if i + 1 < len(edges) else None
        labels.append(f"≥{lo}" if hi is None else (f"{lo}" if hi == lo else f"{lo}–{hi}"))
    idx = np.searchsorted(edges, np.asarray(n_degs), side="right") - 1
    return np.asarray(labels, dtype=object)[idx]


def stratum_order(edges) -> list[str]:
    """The stratum labels of `edges`, in order."""
    edges = [int(e) for e in edges]
    return list(deg_stratum(edges, edges))


def titration_errors(
    draws: pd.DataFrame, means: np.ndarray, truth: pd.DataFrame, references: dict[str, pd.DataFrame],
    n_degs: pd.Series, strata,
) -> pd.DataFrame:
    """Per draw: the subsample mean's MSE over genes against the truth, beside the reference methods' MSE.

    `truth` and each reference: (perturbation × gene) frames with the same genes in the same order as `means`;
    `n_degs`: gt-half DEG count by perturbation. Columns: perturbation, n_degs, stratum, n_td_cells, size, repeat,
    mse, then mse_<reference> per reference method.
    """
    y = truth.loc[draws["perturbation"]].to_numpy()
    out = draws.copy()
    degs = n_degs.reindex(draws["perturbation"]).to_numpy()
    out.insert(1, "n_degs", degs.astype(np.int64))
    out.insert(2, "stratum", deg_stratum(degs, strata))
    out["mse"] = np.mean((means - y) ** 2, axis=1)
    for method, pred in references.items():
        out[f"mse_{method}"] = np.mean((pred.loc[draws["perturbation"]].to_numpy() - y) ** 2, axis=1)
    return out


def fold_gene_errors(truth: pd.DataFrame, predictions: dict[str, pd.DataFrame], pval_adj: np.ndarray, edges) -> pd.DataFrame:
    """binned_gene_errors of one fold: `predictions` (mean, technical_duplicate) are its test perturbations ×
    genes; `truth` (perturbation × gene) and `pval_adj` (same rows and genes as the predictions) are matched by name
    before the call."""
    mean, duplicate = (predictions[m] for m in METHODS)
    rows, genes = mean.index, mean.columns
    return binned_gene_errors(
        truth.loc[rows, genes].to_numpy(), mean.to_numpy(), duplicate.loc[rows, genes].to_numpy(), pval_adj, edges
    )


def titration_cells(halves: pd.DataFrame, cell_names: pd.Index, perturbations) -> dict[str, np.ndarray]:
    """perturbation → row indices (in the processed file's cell order) of its td-half cells."""
    td = halves[(halves["half"].astype(str) == "td") & halves["perturbation"].astype(str).isin(set(perturbations))]
    rows = pd.Index(cell_names).get_indexer(td["cell"].astype(str))
    if (rows < 0).any():
        raise ValueError(f"halves table names {int((rows < 0).sum())} td-half cells the processed data lacks")
    return {p: np.sort(r) for p, r in pd.Series(rows).groupby(td["perturbation"].astype(str).to_numpy(), sort=True)}
