"""Rule write_simulated_gene_sets: a GMT of each simulated regulator's true downstream DEGs (the demo's TF library)."""

import pandas as pd

from pertcal.gsea import simulated_target_sets, write_gmt
from pertcal.io import log_to

log_to(snakemake.log[0])
write_gmt(simulated_target_sets(pd.read_parquet(snakemake.input[0])), snakemake.output[0])
