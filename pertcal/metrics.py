"""Metric panels (the paper's 13, cell-eval, PerturBench, Systema), each metric scored for every test perturbation
of a fold at once from mean profiles ((P, G) row-wise, or (P, P) distance matrices).

One registry, METRICS: name -> Metric (function, panel, direction, perfect value, Δ reference, gene space).
`metric_specs()` is the same as a table for consumers that do not import the dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numba
import numpy as np
import pandas as pd

MIN_DEGS = 3
# Row-wise metrics run over row blocks of about this many values (1 MB of float64 per array), so their
# temporaries stay in cache: about 3× faster than whole (2,000 × 8,192) arrays.
_BLOCK_VALUES = 1 << 17
# Pairs recomputed per block in the exact recomputation of near-tied distances (bounds memory to block × G).
_TIE_BLOCK = 256
_EPS = np.finfo(np.float64).eps


def _rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(P,) row-wise dot products of two (P, G) arrays without a (P, G) temporary."""
    return np.einsum("ij,ij->i", a, b)


def _mse(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) weighted mean squared error Σ w (ŷ − y)² / Σ w (w None: plain mean); NaN where Σ w = 0."""
    d = pred - truth
    if w is None:
        return _rowdot(d, d) / d.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return _rowdot(w * d, d) / w.sum(axis=1)


def _constant(x: np.ndarray, w: np.ndarray | None, ss: np.ndarray, n, mean: np.ndarray) -> np.ndarray:
    """(P,) bool: all values of a row where w > 0 (w None: all) are exactly equal.

    A floating mean leaves a centred (weighted) sum of squares `ss` of rounding size, not 0, for a constant row;
    `n` is the count (or weight sum) behind `ss`. `ss` only shortlists rows within that rounding bound of 0;
    the shortlist is then checked exactly.
    """
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(ss <= n * (2.0 * (x.shape[1] + 1) * _EPS * mean) ** 2)
    out = np.zeros(len(x), dtype=bool)
    if len(rows):
        xs = x[rows]
        m = np.ones_like(xs, dtype=bool) if w is None else w[rows] > 0
        out[rows] = np.where(m, xs, np.inf).min(axis=1) == np.where(m, xs, -np.inf).max(axis=1)
    return out


def _centred(x: np.ndarray, mask: np.ndarray | None, n) -> tuple[np.ndarray, np.ndarray]:
    """Row means over the masked genes and x minus them, zeroed off the mask."""
    mean = (x.sum(axis=1) if mask is None else _rowdot(mask, x)) / n
    xc = x - mean[:, None]
    if mask is not None:
        xc *= mask
    return mean, xc


def _pearson(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) Pearson correlation over genes with w > 0 (w None: all); NaN where a side is constant (as scipy)."""
    mask = None if w is None else (w > 0).astype(np.float64)
    n = pred.shape[1] if mask is None else mask.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm, xc = _centred(pred, mask, n)
        ym, yc = _centred(truth, mask, n)
        sxx, syy = _rowdot(xc, xc), _rowdot(yc, yc)
        r = np.clip(_rowdot(xc, yc) / np.sqrt(sxx * syy), -1.0, 1.0)
    r[_constant(pred, mask, sxx, n, xm) | _constant(truth, mask, syy, n, ym)] = np.nan
    return r


def _r2(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) sklearn r2_score(truth, pred, sample_weight=w) per row, force_finite edge cases included; NaN if Σ w = 0."""
    d = truth - pred
    with np.errstate(divide="ignore", invalid="ignore"):
        if w is None:
            sw = truth.shape[1]
            mean = truth.sum(axis=1) / sw
            tc = truth - mean[:, None]
            num, den = _rowdot(d, d), _rowdot(tc, tc)
        else:
            sw = w.sum(axis=1)
            mean = _rowdot(w, truth) / sw
            tc = truth - mean[:, None]
            num, den = _rowdot(w * d, d), _rowdot(w * tc, tc)
        den[_constant(truth, w, den, sw, mean)] = 0.0
        r2 = np.where(num == 0, 1.0, np.where(den == 0, 0.0, 1.0 - num / den))
    if w is not None:
        r2[sw == 0] = np.nan
    return r2


def _sq_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q) squared Euclidean distances between rows by expansion, and the bound on their rounding error."""
    G = pred.shape[1]
    # Distances are translation invariant; centring on the truths' mean shrinks the norms in the
    # expansion |a|² + |b|² − 2a·b and with them its rounding error.
    centre = truth.mean(axis=0)
    a, b = pred - centre, truth - centre
    a2, b2 = (a * a).sum(axis=1), (b * b).sum(axis=1)
    d2 = a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)
    return d2, 8.0 * G * _EPS * (a2[:, None] + b2[None, :])


def _exact_near(values: np.ndarray, against: np.ndarray, bound, exact: Callable) -> np.ndarray:
    """`values` with the entries within `bound` of `against` (broadcast) replaced by `exact(i, j)`, so ties are exact."""
    near_i, near_j = np.nonzero(np.abs(values - against) <= bound)
    for s in range(0, len(near_i), _TIE_BLOCK):
        i, j = near_i[s : s + _TIE_BLOCK], near_j[s : s + _TIE_BLOCK]
        values[i, j] = exact(i, j)
    return values


def _exact_sq(pred: np.ndarray, truth: np.ndarray) -> Callable:
    return lambda i, j: ((pred[i] - truth[j]) ** 2).sum(axis=1)


def _nir(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) normalized inverse rank: fraction of j ≠ i with ||ŷ_i − y_i|| < ||ŷ_i − y_j||; `w` unused."""
    P, G = pred.shape
    if P < 2:
        return np.full(P, np.nan)
    d2, bound = _sq_distances(pred, truth)
    own = ((pred - truth) ** 2).sum(axis=1)
    d2 = _exact_near(d2, own[:, None], bound, _exact_sq(pred, truth))
    closer = own[:, None] < d2
    np.fill_diagonal(closer, False)
    nir = closer.sum(axis=1) / (P - 1)
    nir[np.isnan(own)] = np.nan
    return nir


# --- the fold a metric sees ----------------------------------------------------------------------------------


@dataclass
class Fold:
    """One method's predictions on one fold and everything a metric may compare them with.

    (P, G) float64 rows per test perturbation: `pred`, `truth` (gt-half means), `weights` (gt DEG weights),
    `deg_mask` (bool gt DEGs), `scores` (gt-half t statistics, NaN where untested), `targets` (bool target genes);
    (G,) `control` and `mean` (the mean baseline); `centre` (G,) the mean of every perturbation's centroid (Systema's
    reference); the dataset-wide spaces, None where not given: `hvg` (G,) bool control HVGs, `loadings` (K, G)
    principal axes of the control-centred pseudobulk. Intermediates shared by several metrics are cached per Fold
    (one row block or the whole fold).
    """

    pred: np.ndarray
    truth: np.ndarray
    control: np.ndarray
    mean: np.ndarray
    weights: np.ndarray
    deg_mask: np.ndarray
    scores: np.ndarray
    targets: np.ndarray
    centroids: np.ndarray  # (C, G): the test truths (rows 0..P−1, in order), then the train perturbations' means
    centre: np.ndarray
    hvg: np.ndarray | None = None
    loadings: np.ndarray | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def rows(self, rows: slice) -> Fold:
        """The same fold restricted to some test perturbations (for row-wise metrics; `centroids` kept whole)."""
        per_row = ("pred", "truth", "weights", "deg_mask", "scores", "targets")
        return replace(self, **{k: getattr(self, k)[rows] for k in per_row}, _cache={})

    def cached(self, key, compute: Callable):
        """compute() once per Fold under `key` (deltas, gene spaces, rankings, distances shared by metrics)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def delta(self, reference: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(pred, truth) minus a reference: 'ctrl' control, 'pert' mean baseline, 'centre' all centroids' mean."""
        if reference is None:
            return self.pred, self.truth
        ref = {"ctrl": self.control, "pert": self.mean, "centre": self.centre}[reference]
        return self.cached(("delta", reference), lambda: (self.pred - ref, self.truth - ref))

    def in_space(self, genes: str, reference: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(pred, truth, weights) of the Δ against `reference` in a gene space. The dataset-wide spaces replace the
        gene axis, weights None: 'hvg' keeps the control HVGs' columns, 'pcs' projects onto the loadings (Δ·Vᵀ, not
        re-centred on the PCA's mean, the perturbations' average Δ: about the mean baseline's own prediction, which
        re-centring would send to ~0). The others keep every gene and weight it (`space`)."""
        if genes not in ("hvg", "pcs"):
            return *self.delta(reference), self.space(genes)
        shared = self.hvg if genes == "hvg" else self.loadings
        if shared is None:
            needs = "control HVGs (hvg=…)" if genes == "hvg" else "PC loadings (loadings=…)"
            raise ValueError(f"gene space {genes!r} needs the dataset's {needs}")

        def compute():
            pred, truth = self.delta(reference)
            if genes == "hvg":
                return pred[:, shared], truth[:, shared]
            return pred @ shared.T, truth @ shared.T

        return *self.cached(("in_space", genes, reference), compute), None

    def space(self, genes: str) -> np.ndarray | None:
        """(P, G) gene weights of a gene space: None (all), 0/1 masks ('degs', 'top20', 'top100'), DEG weights."""
        if genes == "all":
            return None
        if genes == "weights":
            return self.weights
        if genes == "degs":
            return self.cached("degs", lambda: self.deg_mask.astype(np.float64))
        return self.cached(genes, lambda: _top_k_mask(self.scores, int(genes.removeprefix("top"))).astype(np.float64))

    def undefined(self, genes: str) -> np.ndarray:
        """(P,) bool rows where a gene space is undefined: < MIN_DEGS DEGs, or (top-k) an untested perturbation."""
        if genes == "degs":
            return self.deg_mask.sum(axis=1) < MIN_DEGS
        if genes.startswith("top"):
            return np.isnan(self.scores).all(axis=1)
        return np.zeros(len(self.pred), dtype=bool)


def _top_k_mask(scores: np.ndarray, k: int) -> np.ndarray:
    """(P, G) bool: the k genes of largest |t| per row (ties: gene order; NaN last)."""
    key = np.where(np.isnan(scores), -np.inf, np.abs(scores))
    if k >= key.shape[1]:
        return np.ones(key.shape, dtype=bool)
    # A partition finds each row's k-th largest value; genes tied with it enter in gene order.
    kth = -np.partition(-key, k - 1, axis=1)[:, k - 1 : k]
    above = key > kth
    tied = key == kth
    return above | (tied & (np.cumsum(tied, axis=1) <= k - above.sum(axis=1, keepdims=True)))


def _on_deltas(fn: Callable, genes: str, reference: str | None) -> Callable[[Fold], np.ndarray]:
    """A metric of Fold from a function fn(pred, truth, w) of deltas against `reference` over a gene space."""

    def metric(f: Fold) -> np.ndarray:
        out = fn(*f.in_space(genes, reference))
        out[f.undefined(genes)] = np.nan
        return out

    return metric


# --- cell-eval's pseudobulk metrics and discrimination scores -----------------------------------------------


def _mae(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) mean absolute error over genes; `w` unused."""
    return np.abs(pred - truth).mean(axis=1)


# L1 distances in tiles: a block of prediction rows times one gene band stays in cache while every truth row's
# band streams past it once, instead of every truth row streaming from memory once per prediction row.
_L1_ROWS, _L1_GENES = 32, 1024


# fastmath: reassociated (vectorized) sums of finite values; inputs are validated finite before scoring.
@numba.njit(parallel=True, fastmath=True)
def _l1_matrix(a, b):  # pragma: no cover - compiled
    """(P, Q) L1 distances between rows (reassociated sums in fixed tiles: vectorized, deterministic per machine)."""
    P, Q, G = a.shape[0], b.shape[0], a.shape[1]
    out = np.zeros((P, Q))
    for block in numba.prange((P + _L1_ROWS - 1) // _L1_ROWS):
        i0 = block * _L1_ROWS
        i1 = min(i0 + _L1_ROWS, P)
        for g0 in range(0, G, _L1_GENES):
            g1 = min(g0 + _L1_GENES, G)
            for j in range(Q):
                bj = b[j, g0:g1]  # 1-D views: the inner loop vectorizes (indexing 2-D arrays there does not)
                for i in range(i0, i1):
                    ai = a[i, g0:g1]
                    s = 0.0
                    for g in range(g1 - g0):
                        s += abs(ai[g] - bj[g])
                    out[i, j] += s
    return out


def _target_pairs(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, genes) of every (prediction, its target gene) pair."""
    return np.nonzero(targets)


def _discrimination(f: Fold, distance: str) -> np.ndarray:
    """(P,) cell-eval's discrimination score 1 − rank/P: rank = truths Δctrl strictly closer to the predicted Δctrl
    than its own, the prediction's target genes excluded; distance 'l1', 'l2' or 'cosine'."""
    return f.cached(("discrimination", distance), lambda: _discriminate(f, distance))


def _discriminate(f: Fold, distance: str) -> np.ndarray:
    a, b = f.delta("ctrl")
    P = len(a)
    ti, tg = _target_pairs(f.targets)
    # Excluding row i's targets removes per-pair terms: computed on all genes, then those terms subtracted.
    if distance == "l1":
        if P and (a == a[0]).all():  # one prediction for all (control, mean): one row of distances
            d = np.repeat(_l1_matrix(a[:1], b), P, axis=0)
        else:
            d = _l1_matrix(a, b)
        np.subtract.at(d, ti, np.abs(a[ti, tg][:, None] - b[:, tg].T))
    elif distance == "l2":
        d, _ = _sq_distances(a, b)
        np.subtract.at(d, ti, (a[ti, tg][:, None] - b[:, tg].T) ** 2)
    else:
        dot = a @ b.T
        a2 = np.einsum("ij,ij->i", a, a)
        b2 = np.broadcast_to(np.einsum("ij,ij->i", b, b), (P, P)).copy()
        np.subtract.at(dot, ti, a[ti, tg][:, None] * b[:, tg].T)
        np.subtract.at(a2, ti, a[ti, tg] ** 2)
        np.subtract.at(b2, ti, (b[:, tg].T) ** 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = 1.0 - dot / np.sqrt(a2[:, None] * b2)
    own = np.diagonal(d)
    rank = (d < own[:, None]).sum(axis=1)
    out = 1.0 - rank / P
    out[np.isnan(own)] = np.nan
    return out


# --- DE agreement on mean profiles: predicted ranking = |predicted Δctrl| --------------------------------------


def _de_ranks(f: Fold) -> dict:
    """Per-row rankings shared by the DE metrics: positions of each gene by |predicted Δctrl| (descending, ties in
    gene order), (rows, genes, rank) of the true DEGs by |true Δctrl|, the sorted |predicted Δctrl| and labels, the
    DEG counts."""

    def compute():
        pred_lfc, true_lfc = f.delta("ctrl")
        P, G = pred_lfc.shape
        positions = np.broadcast_to(np.arange(G), (P, G))
        pred_order = np.argsort(-np.abs(pred_lfc), axis=1, kind="stable")
        pred_rank = np.empty((P, G), dtype=np.int64)
        np.put_along_axis(pred_rank, pred_order, positions, axis=1)
        # True DEGs only (few): their rank within the row by |true Δctrl|, ties in gene order.
        rows, genes = np.nonzero(f.deg_mask)
        order = np.lexsort((genes, -np.abs(true_lfc[rows, genes]), rows))
        row_start = np.r_[0, np.cumsum(np.bincount(rows, minlength=P))[:-1]]
        true_rank = np.empty(len(rows), dtype=np.int64)
        true_rank[order] = np.arange(len(rows)) - row_start[rows[order]]
        return {
            "pred_rank": pred_rank,
            "true_rank": (rows, genes, true_rank),
            "sorted_score": np.take_along_axis(np.abs(pred_lfc), pred_order, axis=1),
            "sorted_label": np.take_along_axis(f.deg_mask, pred_order, axis=1),
            "n_true": f.deg_mask.sum(axis=1),
        }

    return f.cached("de_ranks", compute)


def _overlap(f: Fold, k: int | None) -> np.ndarray:
    """(P,) cell-eval's overlap_at_k: |top-k′ predicted ∩ top-k′ true DEGs| / k′, k′ = min(k, #DEGs) (k None: #DEGs);
    NaN without DEGs."""
    r = _de_ranks(f)
    k_eff = r["n_true"] if k is None else np.minimum(k, r["n_true"])
    rows, genes, true_rank = r["true_rank"]
    hits = np.bincount(rows, (true_rank < k_eff[rows]) & (r["pred_rank"][rows, genes] < k_eff[rows]), len(k_eff))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k_eff > 0, hits / k_eff, np.nan)


def _direction_match(f: Fold) -> np.ndarray:
    """(P,) fraction of true DEGs whose predicted Δctrl has the true Δctrl's sign; NaN without DEGs."""
    pred_lfc, true_lfc = f.delta("ctrl")
    n = f.deg_mask.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, (f.deg_mask & (np.sign(pred_lfc) == np.sign(true_lfc))).sum(axis=1) / n, np.nan)


def _grouped_average_ranks(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties averaged) of `values` within each group, for groups given in ascending order."""
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    n = len(v)
    new = np.ones(n, dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    tie_start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    ends = np.r_[np.flatnonzero(new)[1:] - 1, n - 1]
    tie_end = ends[np.cumsum(new) - 1]
    group_new = np.ones(n, dtype=bool)
    group_new[1:] = g[1:] != g[:-1]
    group_start = np.maximum.accumulate(np.where(group_new, np.arange(n), 0))
    ranks = np.empty(n)
    ranks[order] = (tie_start + tie_end) / 2.0 - group_start + 1.0
    return ranks


def _spearman_lfc(f: Fold) -> np.ndarray:
    """(P,) Spearman correlation of predicted vs true Δctrl over the true DEGs; NaN with < 2 DEGs or a constant side."""
    pred_lfc, true_lfc = f.delta("ctrl")
    rows, genes = np.nonzero(f.deg_mask)
    P = len(pred_lfc)
    x = _grouped_average_ranks(rows, pred_lfc[rows, genes])
    y = _grouped_average_ranks(rows, true_lfc[rows, genes])
    n = np.bincount(rows, minlength=P).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = np.bincount(rows, x, P) / n, np.bincount(rows, y, P) / n
        xc, yc = x - mx[rows], y - my[rows]
        sxx, syy = np.bincount(rows, xc * xc, P), np.bincount(rows, yc * yc, P)
        r = np.bincount(rows, xc * yc, P) / np.sqrt(sxx * syy)
    # Ranks are exact (multiples of 1/2), so a constant side has exactly zero spread.
    r[(n < 2) | (sxx == 0) | (syy == 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def _auc(f: Fold, kind: str) -> np.ndarray:
    """(P,) ROC AUC or average precision (sklearn's, ties grouped) of |predicted Δctrl| for the true DEG labels;
    NaN where all genes or none are DEGs."""
    r = _de_ranks(f)
    s, lab = r["sorted_score"], r["sorted_label"]
    P, G = s.shape
    pos = lab.sum(axis=1)
    neg = G - pos
    last = np.ones((P, G), dtype=bool)
    last[:, :-1] = s[:, 1:] != s[:, :-1]
    first = np.ones((P, G), dtype=bool)
    first[:, 1:] = last[:, :-1]
    idx = np.broadcast_to(np.arange(G), (P, G))
    end = np.minimum.accumulate(np.where(last, idx, G)[:, ::-1], axis=1)[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "roc":
            start = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
            ascending_rank = G - (start + end) / 2.0
            out = ((lab * ascending_rank).sum(axis=1) - pos * (pos + 1) / 2.0) / (pos * neg)
        else:
            tp = np.cumsum(lab, axis=1)
            precision = np.take_along_axis(tp, end, axis=1) / (end + 1.0)
            out = (lab * precision).sum(axis=1) / pos
    out[(pos == 0) | (neg == 0)] = np.nan
    return out


# --- the Virtual Cell Challenge composite ----------------------------------------------------------------------


def _baseline_fold(f: Fold) -> Fold:
    """The same fold with the mean baseline as the prediction."""
    return replace(f, pred=np.broadcast_to(f.mean, f.pred.shape).copy(), _cache={})


def _vcc(f: Fold, clipped: bool) -> np.ndarray:
    """(P,) mean of MAE, PDS (discrimination_score_l1) and DES (overlap_at_N), each normalized against the fold's mean
    baseline on the same perturbation: 1 − u/b for MAE, (u − b)/(1 − b) otherwise; undefined terms 0 (as cell-eval);
    clipped at 0 (the challenge) or not."""
    base = f.cached("mean_baseline", lambda: _baseline_fold(f))
    terms = []
    with np.errstate(divide="ignore", invalid="ignore"):
        u, b = _mae(f.pred, f.truth, None), _mae(base.pred, base.truth, None)
        terms.append(1.0 - u / b)
        for fn in (lambda g: _discrimination(g, "l1"), lambda g: _overlap(g, None)):
            u, b = fn(f), fn(base)
            terms.append((u - b) / (1.0 - b))
    terms = np.nan_to_num(np.column_stack(terms), nan=0.0, posinf=0.0, neginf=0.0)
    return (np.clip(terms, 0.0, None) if clipped else terms).mean(axis=1)


# --- PerturBench ---------------------------------------------------------------------------------------------


def _rmse(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) root mean squared error over genes; `w` unused."""
    return np.sqrt(_mse(pred, truth, None))


def _cosine(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) cosine similarity of rows; NaN where a side is zero; `w` unused."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(_rowdot(pred, truth) / np.sqrt(_rowdot(pred, pred) * _rowdot(truth, truth)), -1.0, 1.0)


def _rank_of_own(dist: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(P,) PerturBench rank: fraction of predictions j ≠ i with dist[j, i] ≤ own[i] (0 best, 0.5 random)."""
    P = len(own)
    if P < 2:
        return np.full(P, np.nan)
    as_good = dist <= own[None, :]
    np.fill_diagonal(as_good, False)
    out = as_good.sum(axis=0) / (P - 1)
    out[np.isnan(own)] = np.nan
    return out


def _rmse_rank(f: Fold) -> np.ndarray:
    """(P,) PerturBench rank of RMSE: dist[j, i] = ||ŷ_j − y_i|| (squared; ties decided exactly)."""
    own = ((f.pred - f.truth) ** 2).sum(axis=1)
    d2, bound = _sq_distances(f.pred, f.truth)
    return _rank_of_own(_exact_near(d2, own[None, :], bound, _exact_sq(f.pred, f.truth)), own)


def _cosine_rank(f: Fold) -> np.ndarray:
    """(P,) PerturBench rank of the cosine of Δctrl: dist[j, i] = 1 − cos(Δŷ_j, Δy_i) (ties decided exactly)."""
    a, b = f.delta("ctrl")
    with np.errstate(divide="ignore", invalid="ignore"):
        an = a / np.sqrt(_rowdot(a, a))[:, None]
        bn = b / np.sqrt(_rowdot(b, b))[:, None]
    own = _rowdot(an, bn)
    sim = _exact_near(an @ bn.T, own[None, :], 8.0 * a.shape[1] * _EPS, lambda i, j: _rowdot(an[i], bn[j]))
    return _rank_of_own(-sim, -own)


# --- Systema -------------------------------------------------------------------------------------------------


def _centroid_accuracy(f: Fold) -> np.ndarray:
    """(P,) fraction of the other perturbations' centroids (test truths and train means) farther from ŷ_i than y_i."""
    C = len(f.centroids)
    if C < 2:
        return np.full(len(f.pred), np.nan)
    own = ((f.pred - f.truth) ** 2).sum(axis=1)
    d2, bound = _sq_distances(f.pred, f.centroids)
    d2 = _exact_near(d2, own[:, None], bound, _exact_sq(f.pred, f.centroids))
    farther = d2 > own[:, None]
    farther[np.arange(len(own)), np.arange(len(own))] = False
    out = farther.sum(axis=1) / (C - 1)
    out[np.isnan(own)] = np.nan
    return out


# --- the registry ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """One metric: `fn(fold) -> (P,)`, with what calibration needs to know about it.

    `reference`: the Δ family, which also picks the DRF's negative control: 'ctrl' (Δ against control; negative
    control = the mean baseline), 'pert' (Δ against a perturbation mean: the mean baseline, or Systema's mean of all
    centroids; negative control = the control baseline, since the mean's own Δ is ~0), None (raw profiles or ranks;
    negative control = the mean baseline). `genes`: the gene space. `identical_to`: a metric equal to this one by
    definition on mean profiles (so calibration does not count it twice).
    """

    fn: Callable[[Fold], np.ndarray]
    # 'all', 'degs' (gt DEGs), 'weights' (gt DEG weights), 'top20' / 'top100' (largest gt |t|), 'hvg' (control
    # HVGs), 'pcs' (projections on the top PCs of the control-centred pseudobulk)
    genes: str
    reference: str | None
    higher_is_better: bool
    perfect: float
    rowwise: bool = True  # a perturbation's value depends on its own row only
    panel: str = "paper"
    identical_to: str | None = None

    @property
    def negative_control(self) -> str:
        """The method whose score is the DRF's negative control for this metric."""
        return "control" if self.reference == "pert" else "mean"


def _paper(fn, genes, reference, higher, perfect, **kw) -> Metric:
    return Metric(_on_deltas(fn, genes, reference), genes, reference, higher, perfect, **kw)


def _whole(fn, genes, reference, higher, perfect, panel, **kw) -> Metric:
    return Metric(fn, genes, reference, higher, perfect, rowwise=False, panel=panel, **kw)


METRICS: dict[str, Metric] = {
    "mse": _paper(_mse, "all", None, False, 0.0),
    "wmse": _paper(_mse, "weights", None, False, 0.0),
    "pearson_deltactrl": _paper(_pearson, "all", "ctrl", True, 1.0),
    "pearson_deltactrl_degs": _paper(_pearson, "degs", "ctrl", True, 1.0),
    "pearson_deltapert": _paper(_pearson, "all", "pert", True, 1.0),
    "pearson_deltapert_degs": _paper(_pearson, "degs", "pert", True, 1.0),
    "r2_deltactrl": _paper(_r2, "all", "ctrl", True, 1.0),
    "r2_deltactrl_degs": _paper(_r2, "degs", "ctrl", True, 1.0),
    "r2_deltapert": _paper(_r2, "all", "pert", True, 1.0),
    "r2_deltapert_degs": _paper(_r2, "degs", "pert", True, 1.0),
    "weighted_r2_deltactrl": _paper(_r2, "weights", "ctrl", True, 1.0),
    "weighted_r2_deltapert": _paper(_r2, "weights", "pert", True, 1.0),
    "nir": Metric(_on_deltas(_nir, "all", None), "all", None, True, 1.0, rowwise=False),
    # cell-eval 0.8.2 (docs/method.md: definitions on mean profiles and where they differ from cell-eval's)
    "pearson_delta": _paper(_pearson, "all", "ctrl", True, 1.0, panel="cell_eval", identical_to="pearson_deltactrl"),
    "mae": _paper(_mae, "all", None, False, 0.0, panel="cell_eval"),
    "mse_delta": _paper(_mse, "all", "ctrl", False, 0.0, panel="cell_eval", identical_to="mse"),
    "mae_delta": _paper(_mae, "all", "ctrl", False, 0.0, panel="cell_eval", identical_to="mae"),
    **{
        f"discrimination_score_{d}": _whole(lambda f, d=d: _discrimination(f, d), "all", "ctrl", True, 1.0, "cell_eval")
        for d in ("l1", "l2", "cosine")
    },
    **{
        f"overlap_at_{k or 'N'}": _whole(lambda f, k=k: _overlap(f, k), "all", "ctrl", True, 1.0, "cell_eval")
        for k in (None, 50, 100, 200, 500)
    },
    "precision_at_N": _whole(lambda f: _overlap(f, None), "all", "ctrl", True, 1.0, "cell_eval", identical_to="overlap_at_N"),
    "de_direction_match": _whole(_direction_match, "degs", "ctrl", True, 1.0, "cell_eval"),
    "de_spearman_lfc_sig": _whole(_spearman_lfc, "degs", "ctrl", True, 1.0, "cell_eval"),
    "de_sig_genes_recall": _whole(
        lambda f: _overlap(f, None), "all", "ctrl", True, 1.0, "cell_eval", identical_to="overlap_at_N"
    ),
    "pr_auc": _whole(lambda f: _auc(f, "pr"), "all", "ctrl", True, 1.0, "cell_eval"),
    "roc_auc": _whole(lambda f: _auc(f, "roc"), "all", "ctrl", True, 1.0, "cell_eval"),
    "vcc_score": _whole(lambda f: _vcc(f, clipped=True), "all", "ctrl", True, 1.0, "cell_eval"),
    "vcc_score_unclipped": _whole(lambda f: _vcc(f, clipped=False), "all", "ctrl", True, 1.0, "cell_eval"),
    # PerturBench
    "rmse": _paper(_rmse, "all", None, False, 0.0, panel="perturbench"),
    "cosine_logfc": _paper(_cosine, "all", "ctrl", True, 1.0, panel="perturbench"),
    "rmse_rank": _whole(_rmse_rank, "all", None, False, 0.0, "perturbench"),
    "cosine_logfc_rank": _whole(_cosine_rank, "all", "ctrl", False, 0.0, "perturbench"),
    # Systema: Δ against the mean of all perturbations' centroids
    "centroid_accuracy": _whole(_centroid_accuracy, "all", None, True, 1.0, "systema"),
    "pearson_deltacentroid": Metric(
        _on_deltas(_pearson, "all", "centre"), "all", "pert", True, 1.0, panel="systema"
    ),
    "pearson_deltacentroid_top20": Metric(
        _on_deltas(_pearson, "top20", "centre"), "top20", "pert", True, 1.0, panel="systema"
    ),
    # Gene spaces applied to the paper's Δctrl Pearson and MSE (scPertEval's top-k DEG, HVG and PC spaces)
    **{
        f"{name}_{space}": _paper(fn, space, ref, higher, perfect, panel="gene_spaces")
        for space in ("top20", "top100", "hvg", "pcs")
        for name, fn, ref, higher, perfect in (("pearson_deltactrl", _pearson, "ctrl", True, 1.0), ("mse", _mse, None, False, 0.0))
    },
}
PANELS = tuple(dict.fromkeys(m.panel for m in METRICS.values()))


# Metric pairs whose DRF is the same number by algebra (up to the 1e-6 of the DRF's denominator): both are affine in
# the same sum of squared errors Σ w (ŷ − y)², with a denominator that depends on the truth only. Metrics with identical values (`Metric.identical_to`) have identical DRFs too. A figure
# marks the first as "≡ second" so a reader does not count one piece of information twice.
DRF_IDENTITIES = {"r2_deltactrl": "mse", "weighted_r2_deltactrl": "wmse"}


def panel_metrics(panels=("paper",)) -> list[str]:
    """Names of the metrics of the given panels, in registry order."""
    unknown = sorted(set(panels) - set(PANELS))
    if unknown:
        raise ValueError(f"unknown metric panel(s) {unknown}; known: {list(PANELS)}")
    return [name for name, m in METRICS.items() if m.panel in set(panels)]


def panel_specs(panels=("paper",)) -> dict[str, Metric]:
    """The registry restricted to some panels (the per-dataset figures show the paper's panel)."""
    return {name: METRICS[name] for name in panel_metrics(panels)}


def metric_specs(panels=PANELS) -> pd.DataFrame:
    """One row per metric of the given panels: metric, panel, higher_is_better, perfect, negative_control, reference,
    genes, identical_to, drf_identical_to — what calibration (DRF, BDS, calibrated scores) needs to know about each
    metric. `drf_identical_to` names the metric whose DRF it repeats (same values, or by algebra; None if none)."""
    rows = []
    for name in panel_metrics(panels):
        m = METRICS[name]
        rows.append(
            {
                "metric": name, "panel": m.panel, "higher_is_better": m.higher_is_better, "perfect": m.perfect,
                "negative_control": m.negative_control, "reference": m.reference, "genes": m.genes,
                "identical_to": m.identical_to, "drf_identical_to": m.identical_to or DRF_IDENTITIES.get(name),
            }
        )
    return pd.DataFrame(rows)


def make_fold(
    pred, truth, control, mean, weights, deg_mask, *, scores=None, targets=None, train_means=None, hvg=None,
    loadings=None,
) -> Fold:
    """A validated Fold from arrays (see score_predictions); optional inputs default to 'absent'."""
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    P, G = truth.shape
    scores = np.full((P, G), np.nan) if scores is None else np.asarray(scores, dtype=np.float64)
    targets = np.zeros((P, G), dtype=bool) if targets is None else np.asarray(targets, dtype=bool)
    train_means = np.empty((0, G)) if train_means is None else np.asarray(train_means, dtype=np.float64)
    expected = {"pred": (P, G), "control": (G,), "mean": (G,), "weights": (P, G), "deg_mask": (P, G),
                "scores": (P, G), "targets": (P, G), "train_means": (len(train_means), G)}
    given = dict(pred=pred, control=control, mean=mean, weights=weights, deg_mask=deg_mask, scores=scores,
                 targets=targets, train_means=train_means)
    if hvg is not None:
        given["hvg"], expected["hvg"] = hvg, (G,)
    if loadings is not None:
        given["loadings"], expected["loadings"] = loadings, (len(loadings), G)
    for name, shape in expected.items():
        if np.shape(given[name]) != shape:
            raise ValueError(f"score_predictions: {name} has shape {np.shape(given[name])}, expected {shape}")
    centroids = np.vstack([truth, train_means])
    return Fold(
        pred=pred, truth=truth, control=np.asarray(control, dtype=np.float64), mean=np.asarray(mean, dtype=np.float64),
        weights=np.asarray(weights, dtype=np.float64), deg_mask=np.asarray(deg_mask, dtype=bool), scores=scores,
        targets=targets, centroids=centroids, centre=centroids.mean(axis=0),
        hvg=None if hvg is None else np.asarray(hvg, dtype=bool),
        loadings=None if loadings is None else np.asarray(loadings, dtype=np.float64),
    )


def score_fold_metrics(fold: Fold, names) -> np.ndarray:
    """(P, len(names)) values of the named metrics; row-wise ones over row blocks, the others on the whole fold."""
    specs = [METRICS[n] for n in names]
    P, G = fold.truth.shape
    values = np.empty((P, len(specs)))
    rowwise = [k for k, m in enumerate(specs) if m.rowwise]
    step = max(1, _BLOCK_VALUES // G)
    for start in range(0, P, step):
        block = fold.rows(slice(start, start + step))
        for k in rowwise:
            values[start : start + step, k] = specs[k].fn(block)
    for k in (k for k, m in enumerate(specs) if not m.rowwise):
        values[:, k] = specs[k].fn(fold)
    return values


def score_predictions(
    pred, truth, control, mean, weights, deg_mask, perturbations, *, panels=("paper",), scores=None, targets=None,
    train_means=None, hvg=None, loadings=None,
) -> pd.DataFrame:
    """Score (P, G) predictions against (P, G) gt-half truths; long table perturbation, metric, value.

    `control`, `mean`: (G,) control profile and the fold's mean baseline (the Δctrl / Δpert references);
    `weights`: (P, G) gt DEG weights; `deg_mask`: (P, G) bool gt DEGs. All expression is mean log1p, float64.
    Only the metrics of `panels` are scored. Optional: `scores` (P, G) gt-half t statistics (NaN untested; top-k
    gene spaces, else undefined), `targets` (P, G) bool target genes (excluded by the discrimination scores),
    `train_means` (T, G) the train perturbations' means (Systema's centroids beside the test truths), and the
    gene_spaces panel's dataset-wide spaces (needed only by its metrics): `hvg` (G,) bool control HVGs, `loadings`
    (K, G) principal axes of the control-centred pseudobulk.
    """
    perturbations = np.asarray(perturbations, dtype=object)
    if perturbations.shape != (np.shape(truth)[0],):
        raise ValueError(f"score_predictions: perturbations has shape {perturbations.shape}, expected {np.shape(truth)[:1]}")
    fold = make_fold(pred, truth, control, mean, weights, deg_mask, scores=scores, targets=targets,
                     train_means=train_means, hvg=hvg, loadings=loadings)
    names = panel_metrics(panels)
    values = score_fold_metrics(fold, names)
    return pd.DataFrame(
        {
            "perturbation": np.repeat(perturbations, len(names)),
            "metric": np.tile(np.array(names, dtype=object), len(perturbations)),
            "value": values.ravel(),
        }
    )
