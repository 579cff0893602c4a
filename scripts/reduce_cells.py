"""Rule reduce_cells: one chunked pass over processed cells → stats.h5ad (n, Σx, Σx² per perturbation and half)."""

import anndata as ad
import pandas as pd

from pertcal.io import log_to, write_h5ad
from pertcal.reduce import reduce_cells

log_to(snakemake.log[0])
adata = ad.read_h5ad(snakemake.input.adata, backed="r")
stats = reduce_cells(adata, pd.read_parquet(snakemake.input.halves), chunk_size=snakemake.params.chunk_size)
write_h5ad(stats, snakemake.output[0])
