"""Rule split_halves: every cell of processed.h5ad → its gt/td half."""

from pertcal.cells import read_part
from pertcal.io import log_to, write_parquet
from pertcal.split import split_halves

log_to(snakemake.log[0])
obs = read_part(snakemake.input[0], "obs", dataset=snakemake.wildcards.dataset)
write_parquet(split_halves(obs["perturbation"], seed=snakemake.params.seed), snakemake.output[0])
