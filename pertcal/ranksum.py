"""Wilcoxon rank-sum DEGs of one half from its cells (scanpy's rank_genes_groups(method="wilcoxon")), streamed.

Every tested perturbation of a half is compared with the rest of the same cells, so one ranking per gene serves every
perturbation, and a perturbation's rank sum is a per-group sufficient statistic. log1p data are non-negative and
sparse: a gene's z zeros share the lowest tied rank, (z + 1) / 2, so only its nonzeros are sorted, and each nonzero's
rank is z plus its average rank among the gene's nonzeros.

Cost: the genes are cut into blocks whose nonzeros (over the compared cells) fit a budget of `max_nonzeros`; each block
is one streamed pass over the file, plus one pass counting each gene's nonzeros first when the compared cells hold more
entries than the budget. A half within the budget (the simulated demo) is one pass. Memory: one chunk of cells plus one
block of nonzeros (~50 bytes each at the peak: value, gene, group, sorted copies, ranks) and the (P, G) float64 rank
sums.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import special

from pertcal.cells import CHUNK_NONZEROS, CellReader, nonzero_blocks, read_part
from pertcal.degs import bh_rows
from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError
from pertcal.reduce import group_codes


def wilcoxon_degs(
    reader: CellReader, obs_names: pd.Index, genes: pd.Index, halves: pd.DataFrame, half: str, *, min_cells: int = 4,
    rest_includes_controls: bool = False, max_nonzeros: int = CHUNK_NONZEROS, dataset: str = "?",
) -> ad.AnnData:
    """Rank-sum z (scanpy's wilcoxon, tie_correct=False), two-sided normal p and BH p of each tested perturbation.

    Tested and rest as pertcal.degs.test_degs: non-control perturbations with >= `min_cells` cells in `half`; rest = the
    other tested ones' cells, and the half's control cells too if `rest_includes_controls`. `reader`: the processed
    cells (log1p, rows `obs_names`, columns `genes`); `halves`: cell → (perturbation, half). Returns the (P_tested, G)
    DEG matrices (obs = tested perturbations in stats.h5ad order, var = genes; layers `score`, `pval_adj` float32).
    """
    # stats.h5ad's groups and order (reduce_cells), so the rows line up with test_degs'
    codes, groups = group_codes(obs_names, halves)
    n_cells = np.bincount(codes, minlength=len(groups))
    in_half = (groups["half"] == half).to_numpy()
    if not in_half.any():
        raise PertcalInputError(f"{dataset}: halves.parquet: field 'half' has no cells for half '{half}'")
    control = (groups["perturbation"] == CONTROL).to_numpy()
    tested = np.flatnonzero(in_half & ~control & (n_cells >= min_cells))
    P = len(tested)
    # one slot per tested perturbation, then one for the controls, which only ever sit in the rest
    slot = np.full(len(groups), -1, dtype=np.int32)
    slot[tested] = np.arange(P)
    if rest_includes_controls:
        controls = np.flatnonzero(in_half & control)
        if not len(controls):
            raise PertcalInputError(
                f"{dataset}: halves.parquet: no control cell in half '{half}', but "
                "processing.td_rest_includes_controls puts the control cells in the rest of its DEG test"
            )
        slot[controls] = P
    cell_slot = slot[codes]
    compared = cell_slot >= 0
    sizes = np.bincount(cell_slot[compared], minlength=P + 1).astype(np.float64)
    n_compared = int(compared.sum())
    sums = np.empty((P + 1, reader.shape[1]))
    for g0, g1 in _gene_blocks(reader, compared, max_nonzeros):
        gene, value, where = _block_nonzeros(reader, cell_slot, compared, g0, g1)
        sums[:, g0:g1] = _rank_sums(gene, value, where, sizes, n_genes=g1 - g0, n_cells=n_compared)
    score, pval = _z_and_p(sums[:P], sizes[:P], n_compared)

    perturbations = groups["perturbation"].to_numpy(dtype=str)[tested]
    matrix = ad.AnnData(
        obs=pd.DataFrame({"perturbation": perturbations}, index=pd.Index(perturbations)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
        layers={"score": score.astype(np.float32), "pval_adj": bh_rows(pval).astype(np.float32)},
    )
    matrix.uns.update({"half": half, "dataset": dataset})
    return matrix


def wilcoxon_file(
    path, halves: pd.DataFrame, half: str, *, dataset: str, min_cells: int, rest_includes_controls: bool,
    chunk_nonzeros: int,
) -> ad.AnnData:
    """wilcoxon_degs on a processed h5ad at `path`, its cells streamed from disk (chunks and gene blocks of
    `chunk_nonzeros` entries)."""
    obs, var = (read_part(path, key, dataset=dataset) for key in ("obs", "var"))
    with CellReader(path, dataset=dataset, max_nonzeros=chunk_nonzeros) as reader:
        return wilcoxon_degs(
            reader, obs.index, var.index, halves, half, min_cells=min_cells,
            rest_includes_controls=rest_includes_controls, max_nonzeros=chunk_nonzeros, dataset=dataset,
        )


def _gene_blocks(reader: CellReader, compared: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive gene ranges [g0, g1) whose entries in the `compared` cells fit `budget` (≥ 1 gene each)."""
    n_genes = reader.shape[1]
    stored = np.diff(reader.indptr)[compared].sum() if reader.format == "csr" else compared.sum() * n_genes
    if stored <= budget:
        return [(0, n_genes)]
    per_gene = np.zeros(n_genes, dtype=np.int64)
    for _, x in reader.chunks(compared, label="rank sums: entries per gene"):
        per_gene += np.bincount(x.indices, minlength=n_genes)
    return nonzero_blocks(np.concatenate([[0], np.cumsum(per_gene)]), budget)


def _block_nonzeros(
    reader: CellReader, cell_slot: np.ndarray, compared: np.ndarray, g0: int, g1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One streamed pass: the nonzeros of genes [g0, g1) in the compared cells as (gene − g0, value, cell's slot)."""
    genes, values, slots = [], [], []
    for rows, x in reader.chunks(compared, label=f"rank sums: genes {g0}–{g1}"):
        if x.nnz and x.data.min() < 0:
            raise PertcalInputError(
                f"dataset {reader.dataset!r}, file {reader.path}: X holds negative values (min {x.data.min():g}); "
                "the rank-sum test ranks the zeros lowest, which needs non-negative (log1p) data"
            )
        row_slot = np.repeat(cell_slot[rows], np.diff(x.indptr))
        # stored zeros are zeros: they tie with the absent entries (scanpy eliminates them first)
        keep = (x.data != 0) & (x.indices >= g0) & (x.indices < g1)
        genes.append(x.indices[keep] - g0)
        values.append(x.data[keep])
        slots.append(row_slot[keep])
    if not genes:
        return np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    return np.concatenate(genes), np.concatenate(values), np.concatenate(slots)


def _rank_sums(
    gene: np.ndarray, value: np.ndarray, slot: np.ndarray, sizes: np.ndarray, *, n_genes: int, n_cells: int
) -> np.ndarray:
    """(slots, n_genes) float64 rank sums of each slot's cells per gene, ranked (average ties) among `n_cells` cells.

    `gene`, `value`, `slot` (nnz,): the block's nonzeros; `sizes` (slots,): cells per slot. Ranks are half-integers,
    so the float64 sums are exact.
    """
    nnz = np.bincount(gene, minlength=n_genes)
    zero_rank = (n_cells - nnz + 1) / 2.0  # the zeros' shared rank, per gene
    order = np.lexsort((value, gene))
    gene, value, slot = gene[order], value[order], slot[order]
    del order  # temporaries are dropped as soon as used: a block is the job's largest memory
    new = np.ones(gene.size, dtype=bool)
    new[1:] = (gene[1:] != gene[:-1]) | (value[1:] != value[:-1])
    del value
    # a tie run at sorted positions first … stop − 1 holds the 1-based ranks first + 1 … stop: their mean
    first = np.flatnonzero(new)
    mean_rank = (first + np.append(first[1:], gene.size) + 1) / 2.0
    del first
    excess = mean_rank[np.cumsum(new) - 1]
    del new, mean_rank
    # shifted to the gene's own ranks (− its first sorted position) above its zeros (+ n_cells − nnz), and kept as
    # the excess over the zeros' rank, so each slot's zeros are added once per gene below
    excess += ((n_cells - nnz) - (np.cumsum(nnz) - nnz) - zero_rank)[gene]
    key = slot.astype(np.int64)
    key *= n_genes
    key += gene
    sums = np.bincount(key, weights=excess, minlength=len(sizes) * n_genes)
    return sums.reshape(len(sizes), n_genes) + np.outer(sizes, zero_rank)


def _z_and_p(sums: np.ndarray, n: np.ndarray, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """scanpy's z = (R − n(N+1)/2) / √(n(N−n)(N+1)/12) (NaN → 0) and p = 2Φ(−|z|), (P, G) float64 each."""
    with np.errstate(divide="ignore", invalid="ignore"):
        score = (sums - (n * (n_cells + 1) / 2.0)[:, None]) / np.sqrt(n * (n_cells - n) * (n_cells + 1) / 12.0)[:, None]
    score[np.isnan(score)] = 0.0
    # scipy's norm.sf(|z|) is ndtr(−|z|)
    return score, 2.0 * special.ndtr(-np.abs(score))
