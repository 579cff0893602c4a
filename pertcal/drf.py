"""Dynamic Range Fraction: where a metric puts a positive control between the negative control and perfect."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pertcal.io import PertcalInputError
from pertcal.metrics import metric_specs

POSITIVE_CONTROLS = ("interpolated_duplicate", "technical_duplicate")
DRF_COLUMNS = ["dataset", "task", "perturbation", "metric", "positive_control", "drf"]
_KEYS = ["dataset", "task", "fold", "perturbation", "metric"]


def dynamic_range_fraction(pos: np.ndarray, neg: np.ndarray, metric: str, specs: pd.DataFrame | None = None) -> np.ndarray:
    """DRF of positive-control scores `pos` against negative-control scores `neg` (same shape), clipped to [−1, 1].

    `specs`: pertcal.metrics.metric_specs() (or an extension of it) giving the metric's direction and perfect value.
    """
    spec = (metric_specs() if specs is None else specs).set_index("metric").loc[metric]
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if spec.higher_is_better:
        drf = (pos - neg) / (spec.perfect - neg + 1e-6)
    else:
        # the paper's (neg − pos) / (neg + 1e-6) for its errors, whose perfect value is 0
        drf = (neg - pos) / (neg - spec.perfect + 1e-6)
    return np.clip(drf, -1.0, 1.0)


def compute_drf(metrics: pd.DataFrame, specs: pd.DataFrame | None = None, mean_method: str = "mean") -> pd.DataFrame:
    """Per-perturbation DRF of both positive controls for every registered metric; NaN scores skipped.

    `metrics`: long table dataset, task, fold, method, perturbation, metric, value with the methods `mean`,
    `control` and both positive controls. The negative control is each metric's `negative_control` in `specs`
    (pertcal.metrics.metric_specs(), the default): `mean`, except `control` for the Δpert metrics (the mean
    baseline's Δpert is identically 0). `mean_method` replaces the mean baseline in that role (e.g. `mean_loo`).
    Metrics outside the registry are ignored.
    """
    specs = metric_specs() if specs is None else specs
    negative = {m: mean_method if n == "mean" else n for m, n in zip(specs["metric"], specs["negative_control"])}
    missing = [c for c in _KEYS + ["method", "value"] if c not in metrics]
    if missing:
        raise PertcalInputError(f"metrics table: missing columns {missing}")
    methods = set(POSITIVE_CONTROLS) | set(negative.values())
    absent = sorted(methods - set(metrics["method"]))
    if absent:
        raise PertcalInputError(f"metrics table: field 'method' lacks {absent}")
    rows = metrics[metrics["method"].isin(methods) & metrics["metric"].isin(list(negative))]
    duplicated = rows.duplicated(_KEYS + ["method"])
    if duplicated.any():
        first = rows[duplicated].iloc[0]
        raise PertcalInputError(f"metrics table: duplicate rows, e.g. {dict(first[_KEYS + ['method']])}")
    wide = rows.set_index(_KEYS + ["method"])["value"].unstack("method").reset_index()

    parts = []
    for metric, group in wide.groupby("metric", sort=False):
        neg = group[negative[metric]].to_numpy()
        for positive in POSITIVE_CONTROLS:
            part = group[["dataset", "task", "fold", "perturbation", "metric"]].copy()
            part["positive_control"] = positive
            part["drf"] = dynamic_range_fraction(group[positive].to_numpy(), neg, metric, specs)
            parts.append(part)
    drf = pd.concat(parts, ignore_index=True).dropna(subset=["drf"])
    if drf.duplicated(["dataset", "task", "perturbation", "metric", "positive_control"]).any():
        raise PertcalInputError("metrics table: a perturbation is scored in more than one fold of the same task")
    order = {"metric": list(negative), "positive_control": list(POSITIVE_CONTROLS)}
    drf = drf.sort_values(
        ["dataset", "task", "perturbation", "metric", "positive_control"],
        key=lambda col: col.map({v: i for i, v in enumerate(order[col.name])}) if col.name in order else col,
        kind="stable",
    )
    return drf[DRF_COLUMNS].reset_index(drop=True)
