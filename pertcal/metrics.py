"""The 13 calibration metrics, each scored for every test perturbation of a fold at once ((P, G) row-wise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

MIN_DEGS = 3
# Row-wise metrics run over row blocks of about this many values (1 MB of float64 per array), so their
# temporaries stay in cache: about 3× faster than whole (2,000 × 8,192) arrays.
_BLOCK_VALUES = 1 << 17
# Rows scored per block in the exact recomputation of NIR's near-tied distances (bounds memory to block × G).
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


def _nir(pred: np.ndarray, truth: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """(P,) normalized inverse rank: fraction of j ≠ i with ||ŷ_i − y_i|| < ||ŷ_i − y_j||; `w` unused."""
    P, G = pred.shape
    if P < 2:
        return np.full(P, np.nan)
    # Distances are translation invariant; centring on the truths' mean shrinks the norms in the
    # expansion |a|² + |b|² − 2a·b and with them its rounding error.
    centre = truth.mean(axis=0)
    a, b = pred - centre, truth - centre
    a2, b2 = (a * a).sum(axis=1), (b * b).sum(axis=1)
    d2 = a2[:, None] + b2[None, :] - 2.0 * (a @ b.T)
    own = ((pred - truth) ** 2).sum(axis=1)
    # Pairs within the expansion's rounding bound of a tie are recomputed exactly, so ties are decided exactly.
    bound = 8.0 * G * _EPS * (a2[:, None] + b2[None, :])
    near_i, near_j = np.nonzero(np.abs(d2 - own[:, None]) <= bound)
    for s in range(0, len(near_i), _TIE_BLOCK):
        i, j = near_i[s : s + _TIE_BLOCK], near_j[s : s + _TIE_BLOCK]
        d2[i, j] = ((pred[i] - truth[j]) ** 2).sum(axis=1)
    closer = own[:, None] < d2
    np.fill_diagonal(closer, False)
    nir = closer.sum(axis=1) / (P - 1)
    nir[np.isnan(own)] = np.nan
    return nir


@dataclass(frozen=True)
class Metric:
    """One metric: `fn(pred, truth, w) -> (P,)` on deltas against `reference`, over the genes weighted by `genes`."""

    fn: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray]
    genes: str  # 'all' (w None), 'degs' (w = gt DEG mask as 0/1), 'weights' (w = gt DEG weights)
    reference: str | None  # 'ctrl' (Δ vs control), 'pert' (Δ vs mean baseline), None (raw profiles)
    higher_is_better: bool
    perfect: float
    rowwise: bool = True  # a perturbation's value depends on its own row only

    @property
    def negative_control(self) -> str:
        """The method the DRF measures against: the control baseline for Δpert (the mean's Δpert is 0), else the mean."""
        return "control" if self.reference == "pert" else "mean"


METRICS: dict[str, Metric] = {
    "mse": Metric(_mse, "all", None, False, 0.0),
    "wmse": Metric(_mse, "weights", None, False, 0.0),
    "pearson_deltactrl": Metric(_pearson, "all", "ctrl", True, 1.0),
    "pearson_deltactrl_degs": Metric(_pearson, "degs", "ctrl", True, 1.0),
    "pearson_deltapert": Metric(_pearson, "all", "pert", True, 1.0),
    "pearson_deltapert_degs": Metric(_pearson, "degs", "pert", True, 1.0),
    "r2_deltactrl": Metric(_r2, "all", "ctrl", True, 1.0),
    "r2_deltactrl_degs": Metric(_r2, "degs", "ctrl", True, 1.0),
    "r2_deltapert": Metric(_r2, "all", "pert", True, 1.0),
    "r2_deltapert_degs": Metric(_r2, "degs", "pert", True, 1.0),
    "weighted_r2_deltactrl": Metric(_r2, "weights", "ctrl", True, 1.0),
    "weighted_r2_deltapert": Metric(_r2, "weights", "pert", True, 1.0),
    "nir": Metric(_nir, "all", None, True, 1.0, rowwise=False),
}


# Metric pairs whose DRF is the same number by algebra (up to the 1e-6 of the DRF's denominator): both are affine in
# the same sum of squared errors Σ w (ŷ − y)², with a denominator that depends on the truth only. A figure marks the
# first as "≡ second" so a reader does not count one piece of information twice.
DRF_IDENTITIES = {"r2_deltactrl": "mse", "weighted_r2_deltactrl": "wmse"}


def metric_specs() -> pd.DataFrame:
    """One row per registered metric: metric, panel, higher_is_better, perfect, negative_control, drf_identical_to.

    What calibration needs to know of a metric, in registry order; `drf_identical_to` names the metric whose DRF it
    repeats by algebra (None if none).
    """
    return pd.DataFrame(
        [
            dict(metric=name, panel="paper", higher_is_better=m.higher_is_better, perfect=m.perfect,
                 negative_control=m.negative_control, drf_identical_to=DRF_IDENTITIES.get(name))
            for name, m in METRICS.items()
        ]
    )


def score_predictions(pred, truth, control, mean, weights, deg_mask, perturbations) -> pd.DataFrame:
    """Score (P, G) predictions against (P, G) gt-half truths; long table perturbation, metric, value.

    `control`, `mean`: (G,) control profile and the fold's mean baseline (the Δctrl / Δpert references);
    `weights`: (P, G) gt DEG weights; `deg_mask`: (P, G) bool gt DEGs. All expression is mean log1p, float64.
    """
    pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    P, G = truth.shape
    perturbations = np.asarray(perturbations, dtype=object)
    expected = {"pred": (P, G), "control": (G,), "mean": (G,), "weights": (P, G), "deg_mask": (P, G), "perturbations": (P,)}
    given = dict(pred=pred, control=control, mean=mean, weights=weights, deg_mask=deg_mask, perturbations=perturbations)
    for name, shape in expected.items():
        if np.shape(given[name]) != shape:
            raise ValueError(f"score_predictions: {name} has shape {np.shape(given[name])}, expected {shape}")
    references = {"ctrl": np.asarray(control, dtype=np.float64), "pert": np.asarray(mean, dtype=np.float64)}
    weights, deg_mask = np.asarray(weights, dtype=np.float64), np.asarray(deg_mask, dtype=bool)

    specs = list(METRICS.values())
    rowwise = [k for k, m in enumerate(specs) if m.rowwise]
    whole = [k for k, m in enumerate(specs) if not m.rowwise]
    values = np.empty((P, len(specs)))
    step = max(1, _BLOCK_VALUES // G)
    for start in range(0, P, step):
        rows = slice(start, start + step)
        values[rows, rowwise] = _score(
            [specs[k] for k in rowwise], pred[rows], truth[rows], references, weights[rows], deg_mask[rows]
        )
    values[:, whole] = _score([specs[k] for k in whole], pred, truth, references, weights, deg_mask)
    return pd.DataFrame(
        {
            "perturbation": np.repeat(perturbations, len(METRICS)),
            "metric": np.tile(np.array(list(METRICS), dtype=object), P),
            "value": values.ravel(),
        }
    )


def _score(specs: list[Metric], pred, truth, references: dict, weights, deg_mask) -> np.ndarray:
    """(P, len(specs)) values of `specs` for these rows; deltas only for the references the specs use."""
    deltas = {None: (pred, truth)}
    deltas |= {r: (pred - references[r], truth - references[r]) for r in {m.reference for m in specs} - {None}}
    gene_weights = {"all": None, "degs": deg_mask.astype(np.float64), "weights": weights}
    out = np.empty((len(pred), len(specs)))
    for k, m in enumerate(specs):
        out[:, k] = m.fn(*deltas[m.reference], gene_weights[m.genes])
        if m.genes == "degs":
            out[deg_mask.sum(axis=1) < MIN_DEGS, k] = np.nan
    return out
