"""Technical-duplicate halves and cross-validation folds, stored as tables (data, not code)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError


def split_halves(perturbation: pd.Series, *, seed: int) -> pd.DataFrame:
    """Cells → (cell, perturbation, half): each perturbation's cells (control too) split at random into gt/td.

    The first floor(n/2) cells of a random permutation are `gt`, the rest `td`, so sizes differ by at most 1.
    """
    rng = np.random.default_rng(seed)
    labels = perturbation.astype(str).to_numpy()
    order = rng.permutation(labels.size)
    # stable sort by label keeps the random order within each perturbation
    order = order[np.argsort(labels[order], kind="stable")]
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1]
    sizes = np.diff(np.r_[starts, labels.size])
    rank = np.arange(labels.size) - np.repeat(starts, sizes)
    half = np.empty(labels.size, dtype=object)
    half[order] = np.where(rank < np.repeat(sizes // 2, sizes), "gt", "td")
    return pd.DataFrame({"cell": perturbation.index.astype(str), "perturbation": labels, "half": half.astype(str)})


def _chunks(n: int, k: int) -> list[slice]:
    """k consecutive chunks of n items, the first n % k one longer (the paper's fold cut)."""
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    bounds = np.r_[0, np.cumsum(sizes)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(k)]


def assign_folds_single(
    perturbations: list[str], *, n_folds: int, val_fraction: float, seed: int, dataset: str = "", source: str = ""
) -> pd.DataFrame:
    """Unseen-single task: (perturbation, fold, split); each perturbation is test in exactly one fold.

    Sorted perturbations are permuted and cut into n_folds test chunks; of the rest (in permuted order),
    the first int(val_fraction × n_rest) are val and the others train (0.1375 × 80% ≈ 10% val).
    """
    perts = np.random.default_rng(seed).permutation(sorted(set(perturbations) - {CONTROL}))
    if perts.size < n_folds:
        # a fold without test perturbations would still cost a prediction and scoring job per method, for nothing
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: field processing.n_folds_single is {n_folds} but only "
            f"{perts.size} perturbation(s) besides the control passed QC; set processing.n_folds_single to at most "
            f"{perts.size} in the dataset's entry (or keep more perturbations)"
        )
    rows = []
    for fold, test in enumerate(_chunks(perts.size, n_folds)):
        rest = np.r_[perts[: test.start], perts[test.stop :]]
        n_val = int(val_fraction * rest.size)
        rows += [(p, fold, "test") for p in perts[test]]
        rows += [(p, fold, "val") for p in rest[:n_val]] + [(p, fold, "train") for p in rest[n_val:]]
    return _fold_table(rows)


def assign_folds_combo(perturbations: list[str], *, seed: int, dataset: str = "", source: str = "") -> pd.DataFrame:
    """Unseen-combo task, 2 folds: singles always train; each fold tests half the combos and splits the other half
    evenly into val and train (25% / 25% of all combos)."""
    perts = sorted(set(perturbations) - {CONTROL})
    singles = [p for p in perts if "+" not in p]
    combos = np.random.default_rng(seed).permutation([p for p in perts if "+" in p])
    if combos.size < 2:
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: field processing.n_folds_combo is 2 but only {combos.size} "
            "combination(s) passed QC, so a fold would test nothing; drop 'combo' from the dataset's tasks "
            "(or keep more combinations)"
        )
    n_test = combos.size // 2
    test_sets = [combos[:n_test], combos[n_test:]]
    rows = []
    for fold in (0, 1):
        other = test_sets[1 - fold]
        n_val = other.size // 2
        rows += [(p, fold, "train") for p in singles]
        rows += [(p, fold, "test") for p in test_sets[fold]]
        rows += [(p, fold, "val") for p in other[:n_val]] + [(p, fold, "train") for p in other[n_val:]]
    return _fold_table(rows)


def _fold_table(rows) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["perturbation", "fold", "split"])
    df["fold"] = df["fold"].astype(np.int64)
    return df.sort_values(["fold", "split", "perturbation"], kind="stable").reset_index(drop=True)
