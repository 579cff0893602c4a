"""Rule reduce_cells: one chunked pass over processed cells → stats.h5ad (n, Σx, Σx² per perturbation and half)."""

import pandas as pd

from pertcal.io import log_to, write_h5ad
from pertcal.reduce import reduce_file

log_to(snakemake.log[0])
halves = pd.read_parquet(snakemake.input.halves)
stats = reduce_file(
    snakemake.input.adata, halves, dataset=snakemake.wildcards.dataset, chunk_nonzeros=snakemake.params.chunk_nonzeros
)
write_h5ad(stats, snakemake.output[0])
