"""Dataset quirks as small named harmonizers, chosen by config, then one canonical labelling for every dataset."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import anndata as ad

from pertcal.io import PertcalInputError

CONTROL = "control"
log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Harmonized:
    """The cells a dataset keeps and their canonical labels, decided on obs and var alone (X stays on disk)."""

    keep: np.ndarray  # (n_raw_cells,) bool: raw rows kept by the harmonizers
    perturbation: pd.Series  # (n_kept,) canonical labels, index = unique cell names, in raw row order
    genes: pd.Index  # (n_raw_genes,) gene symbols in raw var order


# Labels that are a missing value written out as text; as perturbations they would be benchmarked as genes.
MISSING_LABELS = {"", "nan", "NaN", "None", "NA", "<NA>", "null"}


def harmonize(
    obs: pd.DataFrame,
    var: pd.DataFrame,
    *,
    dataset: str,
    source: str,
    perturbation_column: str,
    control_labels: list[str],
    combo_delimiter: str,
    gene_symbol_column: str | None,
    harmonizers: list[dict],
) -> Harmonized:
    """Kept cells with canonical labels (control = 'control', combos 'A+B') and symbol gene names, from obs/var."""
    where = f"dataset {dataset!r}, file {source}"
    if perturbation_column not in obs:
        raise PertcalInputError(
            f"{where}: perturbation column obs[{perturbation_column!r}] is missing "
            f"(obs has: {', '.join(map(str, obs.columns[:20]))}); set perturbation_column"
        )
    labels = obs[perturbation_column]
    if labels.isna().any():
        raise PertcalInputError(f"{where}: obs[{perturbation_column!r}] has {int(labels.isna().sum())} missing labels")
    labels = labels.astype(str)
    keep = np.ones(len(obs), dtype=bool)
    for step in harmonizers:
        args = {k: v for k, v in step.items() if k != "name"}
        try:
            labels, mask = HARMONIZERS[step["name"]](labels, obs, **args)
        except KeyError as err:
            raise PertcalInputError(f"{where}: harmonizer {step['name']!r} needs obs column {err.args[0]!r}") from None
        except (TypeError, re.error) as err:
            raise PertcalInputError(f"{where}: harmonizer {step['name']!r} arguments {args}: {err}") from None
        if mask is not None:
            keep &= mask
    labels = labels.where(~labels.isin(control_labels), CONTROL)
    if combo_delimiter != "+":
        labels = labels.where(labels == CONTROL, labels.str.replace(combo_delimiter, "+", regex=False))
    labels = labels[keep]
    missing = labels.str.strip().isin(MISSING_LABELS)
    if missing.any():
        raise PertcalInputError(
            f"{where}: obs[{perturbation_column!r}] has {int(missing.sum())} cells labelled as a missing value "
            f"({', '.join(sorted(set(labels[missing])))!r}); drop them (keep_cells_where) or label them"
        )
    if not (labels == CONTROL).any():
        raise PertcalInputError(
            f"{where}: no control cells in obs[{perturbation_column!r}] after harmonizing "
            f"(control labels {control_labels}); set control_labels"
        )
    names = pd.Index(obs.index.astype(str))[keep]
    if names.has_duplicates:
        n_dup = int(names.duplicated().sum())
        log.warning("%s: %d duplicate cell names in obs made unique by a '-<n>' suffix", where, n_dup)
        names = pd.Index(ad.utils.make_index_unique(names))
    return Harmonized(keep=keep, perturbation=pd.Series(labels.to_numpy(), index=names), genes=_symbols(var, where, gene_symbol_column))


def _symbols(var: pd.DataFrame, where: str, gene_symbol_column: str | None) -> pd.Index:
    if gene_symbol_column is None:
        return pd.Index(var.index.astype(str))
    if gene_symbol_column not in var:
        raise PertcalInputError(f"{where}: gene symbol column var[{gene_symbol_column!r}] is missing")
    symbols = var[gene_symbol_column]
    if symbols.isna().any():
        raise PertcalInputError(
            f"{where}: var[{gene_symbol_column!r}] has {int(symbols.isna().sum())} missing symbols"
        )
    return pd.Index(symbols.astype(str).to_numpy())


def targets_of(perturbation: str) -> list[str]:
    """Target genes of a canonical label ('A+B' → ['A', 'B']; control → [])."""
    return [] if perturbation == CONTROL else perturbation.split("+")
