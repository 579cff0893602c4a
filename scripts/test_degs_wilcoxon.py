"""Rule test_degs_wilcoxon: rank-sum DEG matrices of one half from the processed cells, streamed (calibration)."""

import pandas as pd

from pertcal.io import log_to, write_h5ad
from pertcal.ranksum import wilcoxon_file

log_to(snakemake.log[0])
p = snakemake.params
matrix = wilcoxon_file(
    snakemake.input.adata, pd.read_parquet(snakemake.input.halves), snakemake.wildcards.half,
    dataset=snakemake.wildcards.dataset, min_cells=p.min_cells, rest_includes_controls=p.rest_includes_controls,
    chunk_nonzeros=p.chunk_nonzeros,
)
write_h5ad(matrix, snakemake.output[0])
