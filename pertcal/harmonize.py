"""Dataset quirks as small named harmonizers, chosen by config, then one canonical labelling for every dataset."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import anndata as ad

from pertcal.io import PertcalInputError

CONTROL = "control"


def cut_at_first(labels: pd.Series, obs: pd.DataFrame, *, sep: str) -> tuple[pd.Series, np.ndarray]:
    """Keep the text before the first `sep` (e.g. drop a guide suffix)."""
    return labels.str.split(sep, n=1).str[0], None


def label_controls(labels: pd.Series, obs: pd.DataFrame, *, pattern: str) -> tuple[pd.Series, np.ndarray]:
    """Relabel every label matching the regex `pattern` as the control."""
    hit = labels.str.contains(pattern, regex=True)
    return labels.where(~hit, CONTROL), None


def replace_substring(labels: pd.Series, obs: pd.DataFrame, *, old: str, new: str) -> tuple[pd.Series, np.ndarray]:
    """Plain, case-sensitive substring replacement (the paper's str.replace)."""
    return labels.str.replace(old, new, regex=False), None


def keep_cells_where(labels: pd.Series, obs: pd.DataFrame, *, column: str, equals) -> tuple[pd.Series, np.ndarray]:
    """Keep only cells whose obs[column] equals `equals` (e.g. one experimental arm)."""
    if column not in obs:
        raise KeyError(column)
    return labels, (obs[column].astype(str) == str(equals)).to_numpy()


def subsample_perturbations(
    labels: pd.Series, obs: pd.DataFrame, *, max_perturbations: int, keep: list[str] = (), seed: int = 42
) -> tuple[pd.Series, np.ndarray]:
    """Keep at most `max_perturbations` perturbations (the `keep` list first, then random ones) plus controls."""
    perts = sorted(set(labels) - {CONTROL})
    kept = [p for p in keep if p in perts][:max_perturbations]
    rest = [p for p in perts if p not in set(kept)]
    rng = np.random.default_rng(seed)
    n_more = max(0, min(len(rest), max_perturbations - len(kept)))
    kept += list(rng.choice(rest, size=n_more, replace=False)) if n_more else []
    return labels, labels.isin(set(kept) | {CONTROL}).to_numpy()


HARMONIZERS = {
    "cut_at_first": cut_at_first,
    "label_controls": label_controls,
    "replace_substring": replace_substring,
    "keep_cells_where": keep_cells_where,
    "subsample_perturbations": subsample_perturbations,
}


def harmonize(
    adata: ad.AnnData,
    *,
    dataset: str,
    source: str,
    perturbation_column: str,
    control_labels: list[str],
    combo_delimiter: str,
    gene_symbol_column: str | None,
    harmonizers: list[dict],
) -> ad.AnnData:
    """Cells × genes AnnData with canonical obs `perturbation` (control = 'control', combos 'A+B') and symbol var names."""
    if perturbation_column not in adata.obs:
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: perturbation column obs[{perturbation_column!r}] is missing "
            f"(obs has: {', '.join(map(str, adata.obs.columns[:20]))})"
        )
    labels = adata.obs[perturbation_column]
    if labels.isna().any():
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: obs[{perturbation_column!r}] has {int(labels.isna().sum())} missing labels"
        )
    labels = labels.astype(str)
    keep = np.ones(adata.n_obs, dtype=bool)
    for step in harmonizers:
        args = {k: v for k, v in step.items() if k != "name"}
        try:
            labels, mask = HARMONIZERS[step["name"]](labels, adata.obs, **args)
        except KeyError as err:
            raise PertcalInputError(
                f"dataset {dataset!r}, file {source}: harmonizer {step['name']!r} needs obs column {err.args[0]!r}"
            ) from None
        if mask is not None:
            keep &= mask
    labels = labels.where(~labels.isin(control_labels), CONTROL)
    if combo_delimiter != "+":
        labels = labels.where(labels == CONTROL, labels.str.replace(combo_delimiter, "+", regex=False))
    out = adata[keep].copy()
    out.obs = pd.DataFrame({"perturbation": labels[keep].to_numpy()}, index=out.obs_names.astype(str))
    if not (out.obs["perturbation"] == CONTROL).any():
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: no control cells in obs[{perturbation_column!r}] "
            f"after harmonizing (control labels {control_labels})"
        )
    if gene_symbol_column is not None:
        if gene_symbol_column not in out.var:
            raise PertcalInputError(
                f"dataset {dataset!r}, file {source}: gene symbol column var[{gene_symbol_column!r}] is missing"
            )
        symbols = out.var[gene_symbol_column]
        if symbols.isna().any():
            raise PertcalInputError(
                f"dataset {dataset!r}, file {source}: var[{gene_symbol_column!r}] has {int(symbols.isna().sum())} missing symbols"
            )
        out.var_names = symbols.astype(str).to_numpy()
    out.var = pd.DataFrame(index=out.var_names.astype(str))
    return out


def targets_of(perturbation: str) -> list[str]:
    """Target genes of a canonical label ('A+B' → ['A', 'B']; control → [])."""
    return [] if perturbation == CONTROL else perturbation.split("+")
