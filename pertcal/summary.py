"""Per-dataset summary (the paper's Table S5) and the calibration checks on simulated data."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pertcal.metrics import METRICS


def n_degs(degs: pd.DataFrame, *, alpha: float) -> pd.Series:
    """Number of DEGs (pval_adj < alpha) per tested perturbation."""
    return degs.assign(deg=degs["pval_adj"] < alpha).groupby("perturbation", sort=True)["deg"].sum().astype(np.int64)


def dataset_summary(obs: pd.DataFrame, degs_gt: pd.DataFrame, *, dataset: str, alpha: float) -> dict:
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
        "mean_degs": float(n_degs(degs_gt, alpha=alpha).mean()) if len(degs_gt) else 0.0,
    }


def deg_recovery(degs: pd.DataFrame, truth: pd.DataFrame, *, alpha: float) -> dict:
    """Precision and recall of called DEGs (pval_adj < alpha) against the simulator's true DEGs, over tested perturbations."""
    called = set(map(tuple, degs.loc[degs["pval_adj"] < alpha, ["perturbation", "gene"]].to_numpy()))
    tested = set(degs["perturbation"]) & set(truth["perturbation"])
    genes = set(degs["gene"])
    true = truth[truth["is_deg"] & truth["perturbation"].isin(tested) & truth["gene"].isin(genes)]
    true = set(map(tuple, true[["perturbation", "gene"]].to_numpy()))
    called = {c for c in called if c[0] in tested}
    hit = len(called & true)
    return {
        "precision": hit / len(called) if called else float("nan"),
        "recall": hit / len(true) if true else float("nan"),
        "n_called": len(called),
        "n_true": len(true),
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
        "metrics": list(METRICS),
    }
