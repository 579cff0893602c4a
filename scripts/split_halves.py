"""Rule split_halves: every cell of processed.h5ad → its gt/td half."""

import anndata as ad

from pertcal.io import log_to, write_parquet
from pertcal.split import split_halves

log_to(snakemake.log[0])
obs = ad.read_h5ad(snakemake.input[0], backed="r").obs
write_parquet(split_halves(obs["perturbation"], seed=snakemake.params.seed), snakemake.output[0])
