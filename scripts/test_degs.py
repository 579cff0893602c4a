"""Rule test_degs: DEGs of one half from the sufficient statistics, as a long table."""

import anndata as ad

from pertcal.degs import test_degs
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
stats = ad.read_h5ad(snakemake.input[0])
write_parquet(test_degs(stats, snakemake.wildcards.half, min_cells=snakemake.params.min_cells), snakemake.output[0])
