"""Glue between predictions and metrics: ground truth, references and DEG weights for one fold, aligned by name."""

from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from pertcal.baselines import fold_data
from pertcal.degs import deg_mask, deg_weights
from pertcal.io import PertcalInputError
from pertcal.metrics import score_predictions
from pertcal.reduce import half_means

METRIC_PATH = re.compile(r"(?:^|/)results/(?P<dataset>[^/]+)/metrics/(?P<task>[^/]+)/fold(?P<fold>\d+)/(?P<method>[^/]+)\.parquet$")


def score_fold(
    prediction: ad.AnnData, stats: ad.AnnData, folds: pd.DataFrame, fold: int, degs_gt: pd.DataFrame, *,
    deg_alpha: float, source: str = "prediction",
) -> pd.DataFrame:
    """Long (perturbation, metric, value) table of one method's predictions on one fold; truth = gt-half means."""
    d = fold_data(stats, folds, fold, degs_td=None, modality="")
    missing = sorted(set(d.test) - set(prediction.obs_names))
    if missing:
        raise PertcalInputError(f"{source}: obs lacks {len(missing)} test perturbations, e.g. {missing[:5]}")
    absent = d.genes.difference(prediction.var_names)
    if len(absent):
        raise PertcalInputError(f"{source}: var lacks {len(absent)} genes, e.g. {list(absent[:5])}")
    pred = prediction[d.test, d.genes].X
    pred = np.asarray(pred.toarray() if hasattr(pred, "toarray") else pred, dtype=np.float64)
    if not np.isfinite(pred).all():
        raise PertcalInputError(f"{source}: X has NaN or infinite predictions")
    truth = half_means(stats, "gt").loc[d.test, d.genes].to_numpy()
    return score_predictions(
        pred,
        truth,
        d.control.to_numpy(),
        d.mean.to_numpy(),
        deg_weights(degs_gt, d.test, d.genes),
        deg_mask(degs_gt, d.test, d.genes, alpha=deg_alpha),
        d.test,
    )


def read_metric_tables(paths) -> pd.DataFrame:
    """Concatenate per-(dataset, task, fold, method) metric files into one tidy table, keys parsed from the paths."""
    frames = []
    for path in paths:
        m = METRIC_PATH.search(Path(path).as_posix())
        if m is None:
            raise PertcalInputError(f"{path}: not a results/{{dataset}}/metrics/{{task}}/fold{{fold}}/{{method}}.parquet path")
        df = pd.read_parquet(path)
        frames.append(
            df.assign(dataset=m["dataset"], task=m["task"], fold=np.int64(m["fold"]), method=m["method"])[
                ["dataset", "task", "fold", "method", "perturbation", "metric", "value"]
            ]
        )
    return pd.concat(frames, ignore_index=True)
