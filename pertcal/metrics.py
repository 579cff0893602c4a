"""The 13 calibration metrics, each scored for every test perturbation of a fold at once ((P, G) row-wise)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

MIN_DEGS = 3
# Rows scored per block in the exact recomputation of NIR's near-tied distances (bounds memory to block × G).
_TIE_BLOCK = 256


def _mse(pred: np.ndarray, truth: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(P,) weighted mean squared error Σ w (ŷ − y)² / Σ w; NaN where Σ w = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return (w * (pred - truth) ** 2).sum(axis=1) / w.sum(axis=1)


def _is_constant(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(P,) bool: all masked values of a row are equal (an exact test; a floating mean would blur it)."""
    return np.where(mask, x, np.inf).min(axis=1) == np.where(mask, x, -np.inf).max(axis=1)


def _pearson(pred: np.ndarray, truth: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(P,) Pearson correlation over genes with w > 0; NaN where either side is constant (as scipy.stats.pearsonr)."""
    mask = w > 0
    n = mask.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = np.where(mask, pred - np.where(mask, pred, 0.0).sum(axis=1, keepdims=True) / n, 0.0)
        yc = np.where(mask, truth - np.where(mask, truth, 0.0).sum(axis=1, keepdims=True) / n, 0.0)
        r = (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))
    r = np.clip(r, -1.0, 1.0)
    r[_is_constant(pred, mask) | _is_constant(truth, mask)] = np.nan
    return r


def _r2(pred: np.ndarray, truth: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(P,) sklearn r2_score(truth, pred, sample_weight=w) per row, force_finite edge cases included; NaN if Σ w = 0."""
    sw = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (w * truth).sum(axis=1, keepdims=True) / sw[:, None]
        num = (w * (truth - pred) ** 2).sum(axis=1)
        den = (w * (truth - mean) ** 2).sum(axis=1)
        den[_is_constant(truth, w > 0)] = 0.0
        r2 = np.where(num == 0, 1.0, np.where(den == 0, 0.0, 1.0 - num / den))
    r2[sw == 0] = np.nan
    return r2


def _nir(pred: np.ndarray, truth: np.ndarray, w: np.ndarray) -> np.ndarray:
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
    bound = 8.0 * G * np.finfo(np.float64).eps * (a2[:, None] + b2[None, :])
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

    fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    genes: str  # 'all' (w = 1), 'degs' (w = gt DEG mask), 'weights' (w = gt DEG weights)
    reference: str | None  # 'ctrl' (Δ vs control), 'pert' (Δ vs mean baseline), None (raw profiles)
    higher_is_better: bool
    perfect: float


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
    "nir": Metric(_nir, "all", None, True, 1.0),
}


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
    deg_mask = np.asarray(deg_mask, dtype=bool)
    gene_weights = {
        "all": np.broadcast_to(np.ones(G), (P, G)),
        "degs": deg_mask.astype(np.float64),
        "weights": np.asarray(weights, dtype=np.float64),
    }
    references = {None: None, "ctrl": np.asarray(control, dtype=np.float64), "pert": np.asarray(mean, dtype=np.float64)}
    deltas = {k: (pred, truth) if r is None else (pred - r, truth - r) for k, r in references.items()}
    too_few_degs = deg_mask.sum(axis=1) < MIN_DEGS

    values = np.empty((P, len(METRICS)))
    for k, metric in enumerate(METRICS.values()):
        values[:, k] = metric.fn(*deltas[metric.reference], gene_weights[metric.genes])
        if metric.genes == "degs":
            values[too_few_degs, k] = np.nan
    return pd.DataFrame(
        {
            "perturbation": np.repeat(perturbations, len(METRICS)),
            "metric": np.tile(np.array(list(METRICS), dtype=object), P),
            "value": values.ravel(),
        }
    )
