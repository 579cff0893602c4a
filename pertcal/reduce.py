"""One streaming pass over cells → per-(perturbation, half) sufficient statistics (n, Σx, Σx²)."""

from __future__ import annotations

import anndata as ad
import numba
import numpy as np
import pandas as pd

from pertcal.cells import CellReader, read_part
from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError


def group_codes(obs_names: pd.Index, halves: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Per-cell group code and the groups table (perturbation, half) in sorted order."""
    h = halves.set_index("cell").reindex(obs_names.astype(str))
    if h["half"].isna().any():
        raise PertcalInputError(f"halves table lacks {int(h['half'].isna().sum())} cells of the processed data")
    keys = h["perturbation"].astype(str) + "|" + h["half"].astype(str)
    groups, codes = np.unique(keys.to_numpy(), return_inverse=True)
    table = pd.DataFrame([g.rsplit("|", 1) for g in groups], columns=["perturbation", "half"], index=groups)
    return codes, table


@numba.njit
def accumulate_sums(indptr, indices, data, row_groups, total, total_sq):
    """Add each stored value x of CSR rows to total[group, gene] and x² to total_sq, in float64, in storage order."""
    # One pass over the stored values into the dense accumulators: no (groups × genes) temporary per chunk.
    for i in range(row_groups.size):
        g = row_groups[i]
        for k in range(indptr[i], indptr[i + 1]):
            x = np.float64(data[k])
            total[g, indices[k]] += x
            total_sq[g, indices[k]] += x * x


def reduce_cells(reader: CellReader, obs_names: pd.Index, genes: pd.Index, halves: pd.DataFrame, *, uns: dict) -> ad.AnnData:
    """Stats AnnData: obs (perturbation, half) rows with n_cells; layers sum, sumsq (float64, groups × genes); X = mean.

    Cells are read from disk one chunk of nonzeros at a time and stay sparse, so memory is bounded by one chunk
    plus the groups × genes tables.
    """
    codes, groups = group_codes(obs_names, halves)
    n_groups, n_genes = len(groups), reader.shape[1]
    total = np.zeros((n_groups, n_genes))
    total_sq = np.zeros((n_groups, n_genes))
    for rows, x in reader.chunks(label="reduce cells"):
        accumulate_sums(x.indptr, x.indices, x.data, codes[rows], total, total_sq)
    n = np.bincount(codes, minlength=n_groups)
    obs = groups.assign(n_cells=n.astype(np.int64), is_control=groups["perturbation"].eq(CONTROL).to_numpy())
    obs.index = obs.index.astype(str)
    var = pd.DataFrame(index=pd.Index(genes, dtype=str))
    stats = ad.AnnData(X=total / n[:, None], obs=obs, var=var, layers={"sum": total, "sumsq": total_sq})
    stats.uns.update({k: uns[k] for k in ("dataset", "modality", "cell_line") if k in uns})
    return stats


def reduce_file(path, halves: pd.DataFrame, *, dataset: str, chunk_nonzeros: int) -> ad.AnnData:
    """reduce_cells on a processed h5ad at `path`, its cells streamed from disk."""
    obs, var, uns = (read_part(path, key, dataset=dataset) for key in ("obs", "var", "uns"))
    with CellReader(path, dataset=dataset, max_nonzeros=chunk_nonzeros) as reader:
        return reduce_cells(reader, obs.index, var.index, halves, uns=uns)


def pooled_means(stats: ad.AnnData) -> pd.DataFrame:
    """(P, G) mean log1p expression per perturbation over both halves (all its cells), control included."""
    sums = pd.DataFrame(stats.layers["sum"], index=stats.obs["perturbation"].to_numpy(), columns=stats.var_names)
    total = sums.groupby(level=0, sort=True).sum()
    n = stats.obs.groupby("perturbation", sort=True, observed=True)["n_cells"].sum()
    return total.div(n.reindex(total.index), axis=0)


def half_means(stats: ad.AnnData, half: str) -> pd.DataFrame:
    """(P, G) mean log1p expression per perturbation in one half as Σx / n: what stats.h5ad's X holds, from `sum` alone."""
    rows = stats.obs["half"].astype(str).to_numpy() == half
    n = stats.obs["n_cells"].to_numpy(dtype=np.float64)[rows, None]
    return pd.DataFrame(
        np.asarray(stats.layers["sum"])[rows] / n, index=stats.obs["perturbation"].astype(str).to_numpy()[rows],
        columns=stats.var_names,
    )
