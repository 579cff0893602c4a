"""Glue between predictions and metrics: ground truth, references and DEG weights for one fold, aligned by name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from pertcal.baselines import fold_data, fold_split
from pertcal.reduce import half_means
from pertcal.degs import deg_mask, deg_matrix, deg_weights
from pertcal.harmonize import CONTROL, targets_of
from pertcal.io import PertcalInputError, read_rows
from pertcal.metrics import score_predictions

METRIC_PATH = re.compile(r"(?:^|/)results/(?P<dataset>[^/]+)/metrics/(?P<task>[^/]+)/fold(?P<fold>\d+)/(?P<method>[^/]+)\.parquet$")


def read_scoring_inputs(stats_path, degs_gt_path, folds: pd.DataFrame, fold: int) -> tuple[ad.AnnData, ad.AnnData]:
    """(stats, degs_gt): the stats.h5ad rows scoring reads (`sum` of control, train and test, both halves) and the
    gt DEG matrices of the test perturbations (`score` for the weights, `pval_adj` for the DEG mask)."""
    train, test = fold_split(folds, fold)
    stats = read_rows(stats_path, where={"perturbation": [CONTROL, *train, *test]}, layers=("sum",))
    return stats, read_rows(degs_gt_path, where={"perturbation": test}, layers=("score", "pval_adj"))


@dataclass(frozen=True)
class GeneSpaces:
    """The gene_spaces panel's dataset-wide spaces as read from disk: `hvg` (bool by gene), `loadings` (K × genes)."""

    hvg: pd.Series
    loadings: pd.DataFrame

    def aligned(self, genes: pd.Index, *, source: str) -> tuple[np.ndarray, np.ndarray]:
        """((G,) bool HVG mask, (K, G) loadings) in the order of `genes`, matched by name."""
        for what, index in (("HVG table", self.hvg.index), ("PC loadings", self.loadings.columns)):
            missing = genes.difference(index)
            if len(missing):
                raise PertcalInputError(f"{source}: {what} lacks {len(missing)} scored genes, e.g. {list(missing[:5])}")
        return self.hvg.reindex(genes).to_numpy(dtype=bool), self.loadings.reindex(columns=genes).to_numpy()


def read_gene_spaces(inputs) -> GeneSpaces | None:
    """The gene spaces named `hvgs` (select_hvgs: gene, highly_variable, …) and `pcs` (compute_pcs: X = loadings)
    among a rule's inputs, which holds them only when the gene_spaces panel is scored; else None."""
    if not hasattr(inputs, "hvgs"):
        return None
    hvgs = pd.read_parquet(inputs.hvgs)
    missing = [c for c in ("gene", "highly_variable") if c not in hvgs]
    if missing:
        raise PertcalInputError(f"{inputs.hvgs}: missing columns {missing}")
    pcs = ad.read_h5ad(inputs.pcs)
    return GeneSpaces(
        hvg=hvgs.set_index("gene")["highly_variable"].astype(bool),
        loadings=pd.DataFrame(np.asarray(pcs.X, dtype=np.float64), index=pcs.obs_names, columns=pcs.var_names),
    )


def score_fold(
    prediction: ad.AnnData, stats: ad.AnnData, folds: pd.DataFrame, fold: int, degs_gt: ad.AnnData, *,
    deg_alpha: float, panels=("paper",), spaces: GeneSpaces | None = None, source: str = "prediction",
) -> pd.DataFrame:
    """Long (perturbation, metric, value) table of one method's predictions on one fold; truth = gt-half means.

    `panels`: the metric panels scored (pertcal.metrics.PANELS); `spaces`: the control HVGs and PC loadings,
    needed when the gene_spaces panel is scored.
    `stats` (Σx) and `degs_gt` (DEG matrices) may hold only the rows scoring reads; both are matched by name.
    """
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
    hvg, loadings = (None, None) if spaces is None else spaces.aligned(d.genes, source=source)
    return score_predictions(
        pred,
        truth,
        d.control.to_numpy(),
        d.mean.to_numpy(),
        deg_weights(degs_gt, d.test, d.genes),
        deg_mask(degs_gt, d.test, d.genes, alpha=deg_alpha),
        d.test,
        panels=panels,
        scores=deg_matrix(degs_gt, d.test, d.genes, "score", np.nan),
        targets=np.array([d.genes.isin(targets_of(p)) for p in d.test], dtype=bool).reshape(len(d.test), len(d.genes)),
        train_means=d.means.loc[d.train, d.genes].to_numpy(),
        hvg=hvg,
        loadings=loadings,
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
