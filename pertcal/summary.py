"""Per-dataset summary (the paper's Table S5) and the calibration checks on simulated data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from pertcal.embed import coverage
from pertcal.metrics import METRICS, panel_specs


def n_degs(degs: ad.AnnData, *, alpha: float) -> pd.Series:
    """Number of DEGs (pval_adj < alpha) per tested perturbation of a DEG matrix file, by perturbation name (sorted)."""
    counts = (np.asarray(degs.layers["pval_adj"]) < alpha).sum(axis=1).astype(np.int64)
    return pd.Series(counts, index=pd.Index(degs.obs_names, name="perturbation"), name="deg").sort_index()


def dataset_summary(obs: pd.DataFrame, degs_gt: ad.AnnData, *, dataset: str, alpha: float) -> dict:
    """Cells, genes, perturbations, cells per perturbation and mean DEGs (gt half) of one processed dataset."""
    perturbed = obs[~obs["is_control"]]
    per_pert = perturbed.groupby("perturbation", observed=True).size()
    return {
        "dataset": dataset,
        "n_cells": int(len(obs)),
        "n_control_cells": int(obs["is_control"].sum()),
        "n_perturbations": int(per_pert.size),
        "n_combos": int((perturbed.groupby("perturbation", observed=True)["n_targets"].first() > 1).sum()),
        "cells_per_perturbation": float(per_pert.mean()),
        "mean_degs": float(n_degs(degs_gt, alpha=alpha).mean()) if degs_gt.n_obs else 0.0,
    }


def embedding_coverage(obs: pd.DataFrame, tables: dict[str, pd.Index]) -> dict[str, float]:
    """{coverage_<source>: fraction of the dataset's perturbations whose every target has a row in that source's
    embedding table} (the perturbations a model on that embedding can encode; the rest get the mean baseline)."""
    perts = obs.loc[~obs["is_control"], "perturbation"].astype(str).unique()
    return {f"coverage_{source}": coverage(perts, genes) for source, genes in sorted(tables.items())}


def deg_recovery(degs: ad.AnnData, truth: pd.DataFrame, *, alpha: float) -> dict:
    """Precision and recall of called DEGs (pval_adj < alpha) against the simulator's true DEGs, over tested perturbations.

    `degs`: a DEG matrix file's rows and genes; `truth`: long (perturbation, gene, is_deg), matched to it by name.
    """
    called = np.asarray(degs.layers["pval_adj"]) < alpha
    true = truth[truth["is_deg"].to_numpy(dtype=bool)]
    rows = degs.obs_names.get_indexer(true["perturbation"].astype(str))
    cols = degs.var_names.get_indexer(true["gene"].astype(str))
    keep = (rows >= 0) & (cols >= 0)
    is_true = np.zeros_like(called)
    is_true[rows[keep], cols[keep]] = True
    # Only perturbations the simulator describes count: others have no truth to be recalled or missed.
    described = degs.obs_names.isin(truth["perturbation"].astype(str))
    called, is_true = called[described], is_true[described]
    hit, n_called, n_true = int((called & is_true).sum()), int(called.sum()), int(is_true.sum())
    return {
        "precision": hit / n_called if n_called else float("nan"),
        "recall": hit / n_true if n_true else float("nan"),
        "n_called": n_called,
        "n_true": n_true,
    }


def calibration_summary(drf: pd.DataFrame, summary: pd.DataFrame, recovery: dict[str, dict]) -> dict:
    """The method's predictions, checked on the run: WMSE better calibrated than MSE on weak datasets,
    interpolated ≥ technical duplicate on MSE, and DRF rising with perturbation strength (mean DEGs)."""
    mean_drf = drf.groupby(["dataset", "positive_control", "metric"])["drf"].mean()
    interp = mean_drf.xs("interpolated_duplicate", level="positive_control").unstack("metric")
    techdup = mean_drf.xs("technical_duplicate", level="positive_control").unstack("metric")
    strength = summary.set_index("dataset")["mean_degs"].reindex(interp.index)
    weak = strength[strength <= strength.median()].index
    per_dataset = {
        ds: {
            "mean_degs": float(strength[ds]),
            "drf_mse": float(interp.loc[ds, "mse"]),
            "drf_wmse": float(interp.loc[ds, "wmse"]),
            "drf_mse_technical_duplicate": float(techdup.loc[ds, "mse"]),
            **({"deg_recovery": recovery[ds]} if ds in recovery else {}),
        }
        for ds in interp.index
    }
    rho = pd.Series(interp["mse"]).corr(strength, method="spearman") if len(interp) > 2 else float("nan")
    return {
        "datasets": per_dataset,
        "weak_datasets": sorted(weak),
        "checks": {
            "wmse_beats_mse_on_weak_datasets": bool((interp.loc[weak, "wmse"] > interp.loc[weak, "mse"]).all()),
            "interpolated_at_least_technical_duplicate_on_mse": bool(
                (interp["mse"] >= techdup["mse"].reindex(interp.index) - 1e-12).all()
            ),
            "drf_mse_rises_with_strength_spearman": float(rho),
            "drf_mse_rises_with_strength": bool(rho > 0),
        },
        "metrics": [m for m in METRICS if m in panel_specs() or m in set(drf["metric"])],
    }
