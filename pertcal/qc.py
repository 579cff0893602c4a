"""QC, normalization, cell caps and gene selection, streamed over row chunks of the raw file in the method's order.

Three passes over the cells, each holding one chunk: (1) check values and count genes per cell and cells per gene;
then cells are chosen on obs alone (small perturbations dropped, caps applied); (2) per-gene moments of the
normalized data for highly variable gene selection; (3) normalize again and write the selected genes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from pertcal.cells import CellReader, CsrWriter, read_part
from pertcal.harmonize import CONTROL, Harmonized, harmonize, targets_of
from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

# log1p-normalized cells sum to one target (e.g. 1e4) after expm1; float32 storage keeps them within ~1e-6 of it.
TARGET_SUM_RTOL = 1e-3


@dataclass
class CellScan:
    """What pass 1 learns: value kind evidence, genes per cell, cells per gene."""

    n_genes: np.ndarray  # (n_kept,) genes with a value > 0 per kept cell (duplicated genes excluded)
    gene_cells: np.ndarray  # (G_raw,) cells with a value > 0 per gene, among cells passing min_genes
    expm1_sums: np.ndarray  # (n_kept,) Σ expm1(x) per cell over all genes: constant for log1p-normalized data
    n_nonfinite: int
    n_negative: int
    integer: bool
    max_value: float


def _row_ids(x: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))


def scan_cells(reader: CellReader, keep: np.ndarray, gene_ok: np.ndarray, *, min_genes: int) -> CellScan:
    """Pass 1 over the kept raw rows: value checks, genes per cell and cells per gene (of cells with ≥ min_genes)."""
    n_genes, sums = [], []
    gene_cells = np.zeros(reader.shape[1], dtype=np.int64)
    nonfinite = negative = 0
    integer, max_value = True, 0.0
    for _, x in reader.chunks(keep, label="scan cells"):
        data = x.data
        finite = np.isfinite(data)
        nonfinite += int(data.size - finite.sum())
        negative += int((data < 0).sum())
        if data.size:
            integer = integer and bool(np.all(data[finite] == np.rint(data[finite])))
            max_value = max(max_value, float(np.max(data, initial=0.0, where=finite)))
        rows = _row_ids(x)
        expressed = (data > 0) & gene_ok[x.indices]
        per_cell = np.bincount(rows[expressed], minlength=x.shape[0])
        passing = per_cell >= min_genes
        gene_cells += np.bincount(x.indices[expressed & passing[rows]], minlength=reader.shape[1])
        n_genes.append(per_cell)
        with np.errstate(over="ignore", invalid="ignore"):
            sums.append(np.bincount(rows, weights=np.expm1(data.astype(np.float64)), minlength=x.shape[0]))
    return CellScan(
        n_genes=np.concatenate(n_genes) if n_genes else np.zeros(0, np.int64),
        gene_cells=gene_cells,
        expm1_sums=np.concatenate(sums) if sums else np.zeros(0),
        n_nonfinite=nonfinite,
        n_negative=negative,
        integer=integer,
        max_value=max_value,
    )


def value_kind(scan: CellScan, *, declared: str, dataset: str, source: str) -> tuple[str, float | None]:
    """('counts' | 'log1p', detected target sum or None); raise on NaN, negatives, or data that is neither."""
    where = f"dataset {dataset!r}, file {source}: X"
    if scan.n_nonfinite:
        raise PertcalInputError(f"{where} has {scan.n_nonfinite} NaN or infinite values")
    if scan.n_negative:
        raise PertcalInputError(f"{where} has {scan.n_negative} negative values")
    if declared == "counts":
        if not scan.integer:
            raise PertcalInputError(f"{where} is declared as counts (values: counts) but holds non-integer values")
        return "counts", None
    if declared == "log1p":
        return "log1p", None
    if scan.integer:
        return "counts", None
    # an empty cell has no library to be normalized: it says nothing about the target sum
    sums = scan.expm1_sums[scan.expm1_sums > 0]
    target = float(np.median(sums)) if sums.size else 0.0
    spread = float(np.max(np.abs(sums - target)) / target) if target > 0 else np.inf
    if spread > TARGET_SUM_RTOL:
        raise PertcalInputError(
            f"{where} is neither raw counts (it has non-integer values) nor log1p-normalized data (expm1 of each "
            f"cell should sum to one target, but the sums range {sums.min():.4g}–{sums.max():.4g}); pass raw "
            "counts, or declare the dataset's values: log1p if it is log1p data whose genes were subset"
        )
    return "log1p", target


def duplicate_gene_mask(genes: pd.Index, *, policy: str, dataset: str, source: str) -> np.ndarray:
    """(G_raw,) bool genes to keep: refuse duplicated names, or drop every copy (the paper's keep=False) under 'drop'."""
    dup = genes.duplicated(keep=False)
    if not dup.any():
        return np.ones(len(genes), dtype=bool)
    names = sorted(set(genes[dup]))
    if policy == "error":
        raise PertcalInputError(
            f"dataset {dataset!r}, file {source}: duplicate gene names in var ({len(names)}: {', '.join(names[:10])}); "
            "set processing.duplicate_genes: drop to remove every copy"
        )
    log.info("dropping %d duplicated gene names (all copies)", len(names))
    return ~dup


def filter_small_perturbations(labels: np.ndarray, *, min_cells: int) -> np.ndarray:
    """(n,) bool: cells whose perturbation (control included) has at least min_cells cells."""
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return (counts >= min_cells)[inverse]


def cap_cells(labels: np.ndarray, *, max_control_cells: int, seed: int) -> np.ndarray:
    """(n,) bool: each perturbation downsampled to round(mean cells per perturbation, control counted), control to max_control_cells."""
    uniq, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    cap = int(round(counts.mean()))
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(labels), dtype=bool)
    for k, label in enumerate(uniq):
        idx = np.flatnonzero(inverse == k)
        limit = max_control_cells if label == CONTROL else cap
        keep[np.sort(rng.choice(idx, size=limit, replace=False)) if idx.size > limit else idx] = True
    return keep


def normalize_log1p(x: sp.csr_matrix, *, target_sum: float) -> sp.csr_matrix:
    """(cells, genes) counts → log1p(counts normalized to target_sum per cell), float32, by scanpy row by row."""
    chunk = ad.AnnData(sp.csr_matrix(x, dtype=np.float32))
    sc.pp.normalize_total(chunk, target_sum=target_sum)
    sc.pp.log1p(chunk)
    return chunk.X


def _log_values(x: sp.csr_matrix, gene_mask: np.ndarray, kind: str, target_sum: float) -> sp.csr_matrix:
    x = x[:, gene_mask]
    return normalize_log1p(x, target_sum=target_sum) if kind == "counts" else sp.csr_matrix(x, dtype=np.float32)


def expm1_moments(reader: CellReader, cells: np.ndarray, gene_mask: np.ndarray, *, kind: str, target_sum: float):
    """Pass 2: (G,) mean and ddof=1 variance of expm1(log1p data) over `cells`, merged chunk by chunk (Chan et al.)."""
    n, mean, m2 = 0, np.zeros(int(gene_mask.sum())), np.zeros(int(gene_mask.sum()))
    for _, x in reader.chunks(cells, label="gene moments"):
        y = _log_values(x, gene_mask, kind, target_sum)
        # scanpy's seurat flavour takes expm1 of the stored float32 values
        y.data = np.expm1(y.data)
        k = y.shape[0]
        s = np.asarray(y.sum(axis=0, dtype=np.float64)).ravel()
        m = s / k
        centred = y.data.astype(np.float64) - m[y.indices]
        nnz = np.bincount(y.indices, minlength=y.shape[1])
        chunk_m2 = np.bincount(y.indices, weights=centred**2, minlength=y.shape[1]) + (k - nnz) * m**2
        delta = m - mean
        total = n + k
        mean = mean + delta * (k / total)
        m2 = m2 + chunk_m2 + delta**2 * (n * k / total)
        n = total
    return mean, m2 / (n - 1)


def seurat_dispersion(mean: np.ndarray, var: np.ndarray, n_bins: int = 20) -> pd.DataFrame:
    """scanpy's 'seurat' statistics from (G,) mean and ddof=1 variance of expm1(x): means (log1p of the mean),
    dispersions (log of var / mean; NaN where var = 0) and dispersions_norm (z-scored within 20 equal-width bins of
    the means; NaN where the dispersion is)."""
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    dispersion = var / mean
    dispersion[dispersion == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = np.log(dispersion)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": dispersion})
    mean_bin = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby(mean_bin, observed=True)["dispersions"].agg(avg="mean", dev="std")
    # a bin holding a single gene has no std: seurat then sets that gene's normalized dispersion to 1
    lone = stats["dev"].isnull()
    stats.loc[lone, "dev"] = stats.loc[lone, "avg"]
    stats.loc[lone, "avg"] = 0
    per_gene = stats.loc[mean_bin].to_numpy()
    df["dispersions_norm"] = (dispersion - per_gene[:, 0]) / per_gene[:, 1]
    return df


def seurat_hvg(mean: np.ndarray, var: np.ndarray, n_top: int, n_bins: int = 20) -> np.ndarray:
    """(G,) bool top n_top genes by bin-normalized dispersion, scanpy's default 'seurat' flavour, from (G,) moments."""
    norm = seurat_dispersion(mean, var, n_bins)["dispersions_norm"].to_numpy()
    ranked = np.sort(norm[~np.isnan(norm)])[::-1]
    cutoff = ranked[min(n_top, ranked.size) - 1]
    return np.nan_to_num(norm, nan=-np.inf) >= cutoff


def annotate(labels: pd.Series) -> pd.DataFrame:
    """The standard obs columns (perturbation, is_control, n_targets, targets) for labels indexed by cell name."""
    return pd.DataFrame(
        {
            "perturbation": labels.to_numpy(),
            "is_control": (labels == CONTROL).to_numpy(),
            "n_targets": labels.map(lambda p: len(targets_of(p))).to_numpy(dtype=np.int64),
            "targets": labels.map(lambda p: "+".join(targets_of(p))).to_numpy(),
        },
        index=labels.index,
    )


def _targets_present(labels: pd.Series, genes: pd.Index, where: str, report: dict) -> np.ndarray:
    """(G,) bool genes that are a perturbed target; refuse a dataset none of whose targets is among the genes."""
    targets = {t for p in labels.unique() for t in targets_of(p)}
    is_target = genes.isin(targets)
    missing = sorted(targets - set(genes))
    report["missing_targets"] = missing
    if targets and not is_target.any():
        raise PertcalInputError(
            f"{where}: none of the {len(targets)} perturbed targets (e.g. {', '.join(sorted(targets)[:3])}) is among "
            f"the genes (e.g. {', '.join(genes[:3])}); if var holds other IDs, set gene_symbol_column to the var "
            "column holding gene symbols"
        )
    if missing:
        log.warning(
            "%s: %d of %d perturbed targets are not among the genes (listed in qc.json missing_targets): %s",
            where, len(missing), len(targets), ", ".join(missing[:20]),
        )
    return is_target


def _combos_without_singles(labels: pd.Series, tasks: list[str], where: str, report: dict) -> None:
    """List (in the report and on the terminal) combos one of whose single perturbations is not in the data.

    The additive baseline builds a combo from its singles' effects; for these it can only use the singles present.
    """
    if "combo" not in tasks:
        return
    perts = set(labels[labels != CONTROL].unique())
    incomplete = {}
    for combo in sorted(p for p in perts if len(targets_of(p)) > 1):
        missing = [t for t in targets_of(combo) if t not in perts]
        if missing:
            incomplete[combo] = missing
    report["combos_missing_singles"] = incomplete
    if incomplete:
        shown = "; ".join(f"{c}: missing {', '.join(m)}" for c, m in list(incomplete.items())[:20])
        log.warning(
            "%s: %d combos lack a single perturbation after QC, so the additive baseline cannot build them from "
            "both singles (listed in qc.json combos_missing_singles): %s", where, len(incomplete), shown,
        )


def check_benchmarkable(labels: pd.Series, *, tasks: list[str], processing: dict, where: str) -> int:
    """The number of perturbations kept; refuse a dataset with fewer than two, or fewer than a task's folds need."""
    perts = pd.Index(labels[labels != CONTROL].unique())
    combos = perts[perts.str.contains("+", regex=False)]
    fix = ("check perturbation_column, control_labels, harmonizers and processing.min_cells_per_perturbation "
           f"(now {processing['min_cells_per_perturbation']})")
    if len(perts) < 2:
        raise PertcalInputError(
            f"{where}: {len(perts)} perturbation(s) with enough cells remain after QC; a benchmark needs at least 2; {fix}"
        )
    if "single" in tasks and len(perts) < processing["n_folds_single"]:
        raise PertcalInputError(
            f"{where}: {len(perts)} perturbations remain after QC, too few for task 'single' with "
            f"processing.n_folds_single = {processing['n_folds_single']}; lower n_folds_single or {fix}"
        )
    if "combo" in tasks and len(combos) < processing["n_folds_combo"]:
        raise PertcalInputError(
            f"{where}: {len(combos)} combinations remain after QC, too few for task 'combo' with "
            f"processing.n_folds_combo = {processing['n_folds_combo']}; use tasks: [single] or {fix}"
        )
    return len(perts)


def preprocess(
    reader: CellReader,
    raw: Harmonized,
    out_path,
    *,
    dataset: str,
    source: str,
    values: str,
    modality: str,
    cell_line: str,
    processing: dict,
    tasks: list[str],
    seed: int,
) -> dict:
    """Stream the harmonized raw cells into out_path (cells × selected genes, log1p in X) and return the QC report."""
    where = f"dataset {dataset!r}, file {source}"
    if reader.shape != (len(raw.keep), len(raw.genes)):
        raise PertcalInputError(f"{where}: X is {reader.shape} but obs × var is {(len(raw.keep), len(raw.genes))}")
    gene_ok = duplicate_gene_mask(raw.genes, policy=processing["duplicate_genes"], dataset=dataset, source=source)
    report = {"dataset": dataset, "input_cells": int(raw.keep.sum()), "input_genes": int(gene_ok.sum())}
    scan = scan_cells(reader, raw.keep, gene_ok, min_genes=processing["min_genes_per_cell"])
    kind, detected_sum = value_kind(scan, declared=values, dataset=dataset, source=source)
    report.update(values=kind, **({"log1p_target_sum": round(detected_sum, 3)} if detected_sum else {}))

    passing = scan.n_genes >= processing["min_genes_per_cell"]
    gene_mask = gene_ok & (scan.gene_cells >= processing["min_cells_per_gene"])
    report.update(after_filter_cells=int(passing.sum()), after_filter_genes=int(gene_mask.sum()))

    # From here cells are chosen on labels alone; `kept` indexes the harmonized (kept) cells.
    labels = raw.perturbation.to_numpy()
    kept = passing.copy()
    kept[kept] = filter_small_perturbations(labels[kept], min_cells=processing["min_cells_per_perturbation"])
    if not (labels[kept] == CONTROL).any():
        raise PertcalInputError(
            f"{where}: fewer than {processing['min_cells_per_perturbation']} control cells remain after QC"
        )
    report["after_filter_perturbations"] = int(kept.sum())
    kept[kept] = cap_cells(labels[kept], max_control_cells=processing["max_control_cells"], seed=seed)
    cell_labels = raw.perturbation[kept]
    n_perturbations = check_benchmarkable(cell_labels, tasks=tasks, processing=processing, where=where)
    _combos_without_singles(cell_labels, tasks, where, report)
    cells = np.zeros(len(raw.keep), dtype=bool)
    cells[np.flatnonzero(raw.keep)[kept]] = True

    target_sum = processing["target_sum"]
    genes = raw.genes[gene_mask]
    mean, var = expm1_moments(reader, cells, gene_mask, kind=kind, target_sum=target_sum)
    highly_variable = seurat_hvg(mean, var, min(processing["n_hvg"], len(genes)))
    is_target = _targets_present(cell_labels, genes, where, report)
    selected = highly_variable | is_target
    var_out = pd.DataFrame(
        {"highly_variable": highly_variable[selected], "is_target": is_target[selected]},
        index=pd.Index(genes[selected], dtype=str),
    )
    uns = {"dataset": dataset, "modality": modality, "cell_line": cell_line}
    writer = CsrWriter(out_path, obs=annotate(cell_labels), var=var_out, uns=uns)
    for _, x in reader.chunks(cells, label="write processed cells"):
        writer.append(_log_values(x, gene_mask, kind, target_sum)[:, selected])
    writer.close()
    log.info("dataset %s: wrote %d cells × %d genes", dataset, cells.sum(), selected.sum())
    report.update(
        cells=int(cells.sum()),
        genes=int(selected.sum()),
        perturbations=n_perturbations,
        control_cells=int((cell_labels == CONTROL).sum()),
    )
    return report


def preprocess_file(source, out_path, *, dataset: str, harmonize_params: dict, chunk_nonzeros: int, **options) -> dict:
    """Raw h5ad at `source` → processed h5ad at out_path (obs/var read alone, X streamed); the QC report."""
    log.info("dataset %s: preprocessing %s", dataset, source)
    obs, var = (read_part(source, key, dataset=dataset) for key in ("obs", "var"))
    raw = harmonize(obs, var, dataset=dataset, source=str(source), **harmonize_params)
    del obs, var
    with CellReader(source, dataset=dataset, max_nonzeros=chunk_nonzeros) as reader:
        return preprocess(reader, raw, out_path, dataset=dataset, source=str(source), **options)
