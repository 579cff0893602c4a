"""Per-half differential expression from sufficient statistics, and the (P, G) weights and masks derived from it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import stats as sps

from pertcal.io import PertcalInputError

DEG_COLUMNS = ["perturbation", "gene", "score", "logfc", "pval", "pval_adj"]
_OBS_FIELDS = ("perturbation", "half", "n_cells", "is_control")
_LAYERS = ("sum", "sumsq")


def test_degs(stats: ad.AnnData, half: str, min_cells: int = 4) -> pd.DataFrame:
    """Welch t-test (scanpy's t-test_overestim_var) of each perturbation vs the rest of its half.

    `stats`: stats.h5ad (obs per (perturbation, half); layers `sum`, `sumsq` (R, G) float64 of log1p expression).
    Tested: non-control perturbations with >= `min_cells` cells in `half`; rest = the other tested ones' cells.
    Returns the long degs table (perturbation in stats order, then gene in var order).
    """
    if min_cells < 2:
        raise ValueError(f"min_cells must be >= 2 for a sample variance, got {min_cells}")
    _validate_stats(stats, half)
    obs = stats.obs
    tested = np.flatnonzero(
        (obs["half"].astype(str) == half).to_numpy()
        & ~obs["is_control"].to_numpy(dtype=bool)
        & (obs["n_cells"].to_numpy() >= min_cells)
    )
    perturbations = obs["perturbation"].astype(str).to_numpy()[tested]
    genes = stats.var_names.astype(str).to_numpy()
    n = obs["n_cells"].to_numpy(dtype=np.float64)[tested, None]
    s = np.asarray(stats.layers["sum"][tested], dtype=np.float64)
    ss = np.asarray(stats.layers["sumsq"][tested], dtype=np.float64)

    # The rest of group i is the half's tested total minus group i: one subtraction instead of P reductions.
    n_rest = n.sum() - n
    s_rest = s.sum(axis=0) - s
    ss_rest = ss.sum(axis=0) - ss
    with np.errstate(divide="ignore", invalid="ignore"):
        mean, var = _mean_var(n, s, ss)
        mean_rest, var_rest = _mean_var(n_rest, s_rest, ss_rest)
        # overestim_var: the rest's variance is scaled by the group's n, not the rest's (scanpy's small-group hack).
        score, pval = sps.ttest_ind_from_stats(
            mean, np.sqrt(var), n, mean_rest, np.sqrt(var_rest), n, equal_var=False
        )
        logfc = np.log2((np.expm1(mean) + 1e-9) / (np.expm1(mean_rest) + 1e-9))
    score = np.where(np.isnan(score), 0.0, score)
    pval = np.where(np.isnan(pval), 1.0, pval)
    P, G = score.shape
    return pd.DataFrame(
        {
            "perturbation": np.repeat(perturbations, G),
            "gene": np.tile(genes, P),
            "score": score.ravel(),
            "logfc": logfc.ravel(),
            "pval": pval.ravel(),
            "pval_adj": _bh_rows(pval).ravel(),
        },
        columns=DEG_COLUMNS,
    )


# A library function named test_*: keep pytest from collecting it wherever it is imported.
test_degs.__test__ = False


def _validate_stats(stats: ad.AnnData, half: str) -> None:
    dataset = stats.uns.get("dataset", "?")
    for field in _OBS_FIELDS:
        if field not in stats.obs:
            raise PertcalInputError(f"{dataset}: stats.h5ad: obs field '{field}' is missing")
    for layer in _LAYERS:
        if layer not in stats.layers:
            raise PertcalInputError(f"{dataset}: stats.h5ad: layer '{layer}' is missing")
    if half not in set(stats.obs["half"].astype(str)):
        raise PertcalInputError(f"{dataset}: stats.h5ad: obs field 'half' has no rows for half '{half}'")


def _mean_var(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ddof=1 variance from (n, Σx, Σx²); n broadcasts against the (P, G) sums."""
    mean = s / n
    # Σx² − n·m² cancels catastrophically for near-constant genes and can dip below 0: clip.
    var = np.maximum(ss - s * mean, 0.0) / (n - 1)
    return mean, var


def _bh_rows(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values within each row of (P, G) `p` (statsmodels' fdr_bh arithmetic)."""
    m = p.shape[1]
    # The order among tied p-values does not change their adjusted values: no stable sort needed.
    order = np.argsort(p, axis=1)
    adjusted = np.take_along_axis(p, order, axis=1) / (np.arange(1, m + 1) / float(m))
    adjusted = np.minimum.accumulate(adjusted[:, ::-1], axis=1)[:, ::-1]
    np.minimum(adjusted, 1.0, out=adjusted)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def deg_matrix(degs: pd.DataFrame, perturbations, genes, column: str, fill: float) -> np.ndarray:
    """(P, G) float64 pivot of `degs[column]`, rows/columns matched by perturbation/gene NAME; `fill` where absent."""
    rows = pd.Index(perturbations).get_indexer(degs["perturbation"])
    cols = pd.Index(genes).get_indexer(degs["gene"])
    keep = (rows >= 0) & (cols >= 0)
    flat = rows[keep].astype(np.int64) * len(genes) + cols[keep]
    if len(np.unique(flat)) != len(flat):
        raise PertcalInputError("degs table: (perturbation, gene) pairs are not unique")
    out = np.full((len(perturbations), len(genes)), fill, dtype=np.float64)
    out.ravel()[flat] = degs[column].to_numpy(dtype=np.float64)[keep]
    return out


def deg_weights(degs_gt: pd.DataFrame, perturbations, genes) -> np.ndarray:
    """(P, G) gene weights ((|t| − min|t|) / (max|t| − min|t|))² per perturbation; 0 where NaN or untested."""
    t = np.abs(deg_matrix(degs_gt, perturbations, genes, "score", np.nan))
    # fmin/fmax skip NaN without warnings and leave all-NaN (untested) rows NaN.
    lo = np.fmin.reduce(t, axis=1, keepdims=True)
    hi = np.fmax.reduce(t, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = ((t - lo) / (hi - lo)) ** 2
    return np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)


def deg_mask(degs_gt: pd.DataFrame, perturbations, genes, alpha: float = 0.05) -> np.ndarray:
    """(P, G) bool: gene is differentially expressed (BH-adjusted p < `alpha`); False where untested."""
    return deg_matrix(degs_gt, perturbations, genes, "pval_adj", np.nan) < alpha


def interpolation_alpha(degs_td: pd.DataFrame, perturbations, genes) -> np.ndarray:
    """(P, G) interpolation weight α = 1 − pval_adj of the td-half test; 0 where untested (or NaN)."""
    return np.nan_to_num(1.0 - deg_matrix(degs_td, perturbations, genes, "pval_adj", np.nan), nan=0.0)
