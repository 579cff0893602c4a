"""Rule select_hvgs: one chunked pass over the control cells → scanpy 'seurat' dispersions and the control HVGs."""

from pertcal.io import log_to, write_parquet
from pertcal.spaces import control_hvgs_file

log_to(snakemake.log[0])
p = snakemake.params
table = control_hvgs_file(snakemake.input[0], dataset=snakemake.wildcards.dataset, n_top=p.n_hvgs,
                          chunk_nonzeros=p.chunk_nonzeros)
write_parquet(table, snakemake.output[0])
