"""Per-half differential expression from sufficient statistics, and the (P, G) weights and masks derived from it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import special

from pertcal.io import PertcalInputError

# The long table's value columns (float64), after its perturbation and gene columns.
DEG_VALUES = ("score", "logfc", "pval", "pval_adj")
# What the later stages read (weights from score; DEG mask and interpolation α from pval_adj): the matrix file's layers.
MATRIX_LAYERS = ("score", "pval_adj")
# Names as dictionaries (indices into the block's perturbations and the genes): no per-row string building.
DEG_SCHEMA = pa.schema(
    [("perturbation", pa.dictionary(pa.int32(), pa.string())), ("gene", pa.dictionary(pa.int32(), pa.string()))]
    + [(c, pa.float64()) for c in DEG_VALUES]
)
# Rows per block: ~2^18 tests keep each of the block's float64 temporaries at ~2 MB, near cache size.
BLOCK_TESTS = 2**18
# The variance of the t statistic's denominator: scanpy's default (the rest's variance over the group's n) or Welch's.
DEG_TESTS = ("overestim_var", "welch")
_OBS_FIELDS = ("perturbation", "half", "n_cells", "is_control")
_LAYERS = ("sum", "sumsq")
log = logging.getLogger(__name__)


def test_degs(
    stats: ad.AnnData, half: str, *, min_cells: int = 4, rest_includes_controls: bool = False,
    block_size: int | None = None, sink: Callable[[pa.Table], None] | None = None, method: str = "overestim_var",
) -> ad.AnnData:
    """Welch t-test (scanpy's t-test_overestim_var) of each perturbation vs the rest of its half, in blocks of rows.

    `method`: "overestim_var" (the pipeline's test) or "welch" (plain Welch: the rest's variance over the rest's n,
    scipy.stats.ttest_ind_from_stats(equal_var=False)), for the calibration's sensitivity to the DEG test.

    `stats`: stats.h5ad, or only some of its rows (obs per (perturbation, half); layers `sum`, `sumsq` (R, G) float64).
    Tested: non-control perturbations with >= `min_cells` cells in `half`; rest = the other tested ones' cells, and
    the half's control cells too if `rest_includes_controls` (then `stats` must hold the half's control row).
    Returns the (P_tested, G) DEG matrices (obs = tested perturbations in stats order, var = genes; layers
    MATRIX_LAYERS float32). `sink`, if given, receives each block's long rows (DEG_SCHEMA, all four values, float64).
    """
    if min_cells < 2:
        raise ValueError(f"min_cells must be >= 2 for a sample variance, got {min_cells}")
    if method not in DEG_TESTS:
        raise ValueError(f"DEG test method must be one of {DEG_TESTS}, got {method!r}")
    _validate_stats(stats, half)
    obs = stats.obs
    tested = np.flatnonzero(
        (obs["half"].astype(str) == half).to_numpy()
        & ~obs["is_control"].to_numpy(dtype=bool)
        & (obs["n_cells"].to_numpy() >= min_cells)
    )
    perturbations = obs["perturbation"].astype(str).to_numpy()[tested]
    genes = stats.var_names.astype(str)
    n = obs["n_cells"].to_numpy(dtype=np.float64)[tested, None]
    s, ss = (np.asarray(stats.layers[layer]) for layer in _LAYERS)
    P, G = len(tested), stats.n_vars
    block_size = block_size or max(1, BLOCK_TESTS // max(G, 1))
    # A block of consecutive rows (the usual case: stats rows of one half, read alone) is a view, not a copy.
    blocks = [_as_slice(tested[i : i + block_size]) for i in range(0, P, block_size)]

    # The rest of group i is the half's tested total minus group i: totals once (block by block, so the inputs are
    # never copied whole), then one subtraction per block.
    n_tot, s_tot, ss_tot = n.sum(), np.zeros(G), np.zeros(G)
    for rows in blocks:
        s_tot += s[rows].sum(axis=0)
        ss_tot += ss[rows].sum(axis=0)
    if rest_includes_controls:
        controls = _control_rows(stats, half)
        n_tot += obs["n_cells"].to_numpy(dtype=np.float64)[controls].sum()
        s_tot += s[controls].sum(axis=0)
        ss_tot += ss[controls].sum(axis=0)
    sizes, size_code = np.unique(n[:, 0], return_inverse=True)
    silent = np.zeros((len(sizes), G))
    silent_p = _two_sided_p(*_welch(sizes[:, None], silent, silent, n_tot, s_tot, ss_tot, method)[:2])
    out = {layer: np.empty((P, G), dtype=np.float32) for layer in MATRIX_LAYERS}
    gene_names = pa.array(genes.to_numpy(dtype=object), pa.string())
    gene_codes = np.tile(np.arange(G, dtype=np.int32), block_size)
    started = time.perf_counter()
    for start in range(0, P, block_size):
        rows, stop = blocks[start // block_size], min(start + block_size, P)
        block = _test_block(
            n[start:stop], s[rows], ss[rows], (n_tot, s_tot, ss_tot), silent_p, size_code[start:stop], method
        )
        for layer, values in out.items():
            values[start:stop] = block[layer]
        if sink is not None:
            b = stop - start
            names = pa.array(perturbations[start:stop].astype(object), pa.string())
            columns = [
                pa.DictionaryArray.from_arrays(np.repeat(np.arange(b, dtype=np.int32), G), names),
                pa.DictionaryArray.from_arrays(gene_codes[: b * G], gene_names),
            ] + [pa.array(block[layer].ravel()) for layer in DEG_VALUES]
            sink(pa.Table.from_arrays(columns, schema=DEG_SCHEMA))
        _log_progress(stop, P, started)

    matrix = ad.AnnData(
        obs=pd.DataFrame({"perturbation": perturbations}, index=pd.Index(perturbations)),
        var=pd.DataFrame(index=genes),
        layers=out,
    )
    matrix.uns.update({"half": half, **({"dataset": stats.uns["dataset"]} if "dataset" in stats.uns else {})})
    return matrix


# A library function named test_*: keep pytest from collecting it wherever it is imported.
test_degs.__test__ = False


def _as_slice(rows: np.ndarray) -> slice | np.ndarray:
    """`rows` as a slice when they are consecutive, else as they are."""
    return slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows


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


def _control_rows(stats: ad.AnnData, half: str) -> np.ndarray:
    """Indices of the control rows of `half`; refused if there are none (a rest with controls needs them)."""
    obs = stats.obs
    rows = np.flatnonzero((obs["half"].astype(str) == half).to_numpy() & obs["is_control"].to_numpy(dtype=bool))
    if not len(rows):
        raise PertcalInputError(
            f"{stats.uns.get('dataset', '?')}: stats.h5ad: no control row in half '{half}', but "
            "processing.td_rest_includes_controls puts the control cells in the rest of its DEG test"
        )
    return rows


def _test_block(n, s, ss, totals, silent_p, size_code, method="overestim_var") -> dict[str, np.ndarray]:
    """score, logfc, pval, pval_adj (b, G) float64 of one block of groups (n (b, 1); Σx, Σx² (b, G)) vs the rest.

    `silent_p` (sizes, G): the p-value of a group of each size that never expresses the gene; `size_code` (b,) its row.
    """
    score, df, logfc = _welch(n, s, ss, *totals, method)
    # A group without any expression of a gene has Σx = Σx² = 0, so its t and df depend on its size only: those
    # p-values (about half of them in sparse data) come from the per-size table, the costly t tail only for the rest.
    silent = (s == 0) & (ss == 0)
    live = ~silent
    pval = np.take(silent_p, size_code, axis=0)
    pval[live] = _two_sided_p(score[live], df[live])
    return {"score": score, "logfc": logfc, "pval": pval, "pval_adj": bh_rows(pval)}


def _welch(n, s, ss, n_tot, s_tot, ss_tot, method="overestim_var") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch t (scanpy's overestim_var, or plain Welch), its df and scanpy's log2 fold change, (b, G) float64 each."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean, var = _mean_var(n, s, ss)
        mean_rest, var_rest = _mean_var(n_tot - n, s_tot - s, ss_tot - ss)
        logfc = np.log2((np.expm1(mean) + 1e-9) / (np.expm1(mean_rest) + 1e-9))
        if method == "welch":
            # Welch–Satterthwaite with each side's own n, as scipy's ttest_ind_from_stats(equal_var=False)
            a, b = var / n, var_rest / (n_tot - n)
            score = (mean - mean_rest) / np.sqrt(a + b)
            df = (a + b) ** 2 / (a * a / (n - 1) + b * b / (n_tot - n - 1))
            return _nan_score_as_scanpy(score, df) + (logfc,)
        # overestim_var: the rest's variance is scaled by the group's n, not the rest's (scanpy's small-group hack),
        # so with n1 = n2 = n scipy's Welch–Satterthwaite df is (n − 1)(v + v_r)² / (v² + v_r²).
        score = np.subtract(mean, mean_rest, out=mean)
        total = var + var_rest
        df = np.multiply(total, total)
        df *= n - 1
        np.multiply(var, var, out=var)
        np.multiply(var_rest, var_rest, out=var_rest)
        var += var_rest
        df /= var
        total /= n
        np.sqrt(total, out=total)
        score /= total
    return _nan_score_as_scanpy(score, df) + (logfc,)


def _nan_score_as_scanpy(score: np.ndarray, df: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scanpy's convention: a NaN score (0 / 0: both variances 0) becomes 0. Its df is NaN too, and scipy's df of 1
    for it then gives p = 2 · stdtr(1, 0) = 1 exactly, scanpy's p for a NaN score; any other df stays as it is."""
    nan = np.isnan(score)
    score[nan] = 0.0
    df[nan] = 1.0
    return score, df


def _two_sided_p(score: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p = 2 · P(T_df < −|t|): scipy's own route (stdtr) without ttest_ind_from_stats' overhead."""
    p = special.stdtr(df, np.copysign(score, -1.0))
    p *= 2.0
    return p


def _mean_var(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and ddof=1 variance from (n, Σx, Σx²); n broadcasts against the (P, G) sums."""
    mean = s / n
    # Σx² − n·m² cancels catastrophically for near-constant genes and can dip below 0: clip.
    var = s * mean
    np.subtract(ss, var, out=var)
    np.maximum(var, 0.0, out=var)
    var /= n - 1
    return mean, var


def bh_rows(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values within each row of (P, G) `p` (statsmodels' fdr_bh arithmetic)."""
    m = p.shape[1]
    # Tied p-values share one adjusted value, so the sorted values (a fast sort) and the argsort's order (any order
    # among ties) line up: no stable sort and no gather through the order are needed.
    order = np.argsort(p, axis=1)
    adjusted = np.sort(p, axis=1)
    adjusted /= np.arange(1, m + 1) / float(m)
    adjusted = np.minimum.accumulate(adjusted[:, ::-1], axis=1)[:, ::-1]
    np.minimum(adjusted, 1.0, out=adjusted)
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def _log_progress(done: int, total: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    rate = done / elapsed if elapsed > 0 else float("inf")
    log.info("DEGs: %d / %d perturbations, %.0f per s, ETA %.0f s", done, total, rate, (total - done) / rate)


def deg_matrix(degs: ad.AnnData, perturbations, genes, layer: str, fill: float) -> np.ndarray:
    """(P, G) float64 of one DEG-matrix layer, rows/columns matched by perturbation/gene NAME; `fill` where absent."""
    rows = degs.obs_names.get_indexer(pd.Index(perturbations))
    cols = degs.var_names.get_indexer(pd.Index(genes))
    out = np.full((len(rows), len(cols)), fill, dtype=np.float64)
    found_rows, found_cols = np.flatnonzero(rows >= 0), np.flatnonzero(cols >= 0)
    values = np.asarray(degs.layers[layer])
    out[np.ix_(found_rows, found_cols)] = values[np.ix_(rows[found_rows], cols[found_cols])]
    return out


def deg_weights(degs_gt: ad.AnnData, perturbations, genes) -> np.ndarray:
    """(P, G) gene weights ((|t| − min|t|) / (max|t| − min|t|))² per perturbation; 0 where NaN or untested."""
    t = np.abs(deg_matrix(degs_gt, perturbations, genes, "score", np.nan))
    # fmin/fmax skip NaN without warnings and leave all-NaN (untested) rows NaN.
    lo = np.fmin.reduce(t, axis=1, keepdims=True)
    hi = np.fmax.reduce(t, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = ((t - lo) / (hi - lo)) ** 2
    return np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)


def deg_mask(degs_gt: ad.AnnData, perturbations, genes, alpha: float = 0.05) -> np.ndarray:
    """(P, G) bool: gene is differentially expressed (BH-adjusted p < `alpha`); False where untested."""
    return deg_matrix(degs_gt, perturbations, genes, "pval_adj", np.nan) < alpha


def interpolation_alpha(degs_td: ad.AnnData, perturbations, genes) -> np.ndarray:
    """(P, G) interpolation weight α = 1 − pval_adj of the td-half test; 0 where untested (or NaN)."""
    return np.nan_to_num(1.0 - deg_matrix(degs_td, perturbations, genes, "pval_adj", np.nan), nan=0.0)
