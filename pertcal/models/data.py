"""What every model reads for one fold: the cells of its train/val perturbations and control, and the test list."""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError

FOLD_COLUMNS = ("perturbation", "fold", "split")


@dataclass(frozen=True)
class FoldCells:
    """One fold's training material: cells of train, val and control (both halves), and the test perturbations.

    Test perturbations' cells are never part of it: a model cannot see what it is scored on.
    """

    x: sp.csr_matrix  # (N, G) float32 log1p-normalised expression
    perturbation: np.ndarray  # (N,) labels; control = CONTROL
    genes: pd.Index  # (G,) processed.h5ad's gene order
    train: list[str]  # folds-file order
    val: list[str]
    test: list[str]
    dataset: str

    def cells_of(self, perturbations) -> np.ndarray:
        """(n,) row indices of the cells whose perturbation is in `perturbations`."""
        return np.flatnonzero(np.isin(self.perturbation, list(perturbations)))

    @property
    def control_cells(self) -> np.ndarray:
        return self.cells_of([CONTROL])

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), G) float32 dense expression of those cells."""
        return self.x[rows].toarray()

    def means(self, perturbations: list[str]) -> np.ndarray:
        """(P, G) float64 mean expression per perturbation (each perturbation's cells, both halves)."""
        index = {p: k for k, p in enumerate(perturbations)}
        rows = self.cells_of(perturbations)
        codes = np.array([index[p] for p in self.perturbation[rows]], dtype=np.int64)
        counts = np.bincount(codes, minlength=len(perturbations)).astype(np.float64)
        # perturbations × cells averaging matrix: one sparse product for all means
        avg = sp.csr_matrix((1.0 / counts[codes], (codes, np.arange(rows.size))), shape=(len(perturbations), rows.size))
        return np.asarray((avg @ self.x[rows].astype(np.float64)).todense())

    @property
    def mean_baseline(self) -> np.ndarray:
        """(G,) the mean baseline: average of the train perturbations' means, each perturbation weighted equally."""
        return self.means(self.train).mean(axis=0)


def load_fold(adata: ad.AnnData, folds: pd.DataFrame, fold: int, *, source: str, folds_source: str) -> FoldCells:
    """Collect a fold's train/val/control cells from processed.h5ad and its split from the folds table."""
    dataset = str(adata.uns.get("dataset", "unknown"))
    missing = [c for c in FOLD_COLUMNS if c not in folds.columns]
    if missing:
        raise PertcalInputError(f"dataset {dataset!r}, file {folds_source}: missing column {missing[0]!r}")
    f = folds[folds["fold"] == fold]
    if f.empty:
        raise PertcalInputError(
            f"dataset {dataset!r}, file {folds_source}: field 'fold' has no rows for fold {fold} "
            f"(folds: {sorted(folds['fold'].unique().tolist())})"
        )
    split = {s: f.loc[f["split"] == s, "perturbation"].astype(str).tolist() for s in ("train", "val", "test")}
    if not split["train"] or not split["test"]:
        raise PertcalInputError(f"dataset {dataset!r}, file {folds_source}: fold {fold} has no train or no test rows")
    if "perturbation" not in adata.obs.columns:
        raise PertcalInputError(f"dataset {dataset!r}, file {source}: obs lacks the field 'perturbation'")
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    absent = sorted(set(split["train"] + split["val"] + [CONTROL]) - set(labels))
    if absent:
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: field 'perturbation' has no cells of {len(absent)} "
            f"train/val/control perturbations of {folds_source}, e.g. {absent[:5]}"
        )
    keep = np.flatnonzero(np.isin(labels, split["train"] + split["val"] + [CONTROL]))
    x = adata.X[keep]
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else sp.csr_matrix(np.asarray(x, dtype=np.float32))
    return FoldCells(
        x=x,
        perturbation=labels[keep],
        genes=pd.Index(adata.var_names.astype(str)),
        train=split["train"],
        val=split["val"],
        test=split["test"],
        dataset=dataset,
    )
