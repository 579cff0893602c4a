"""Rule score_calibration_controls: metric values of mean_loo and the gaming predictors on every fold of one dataset."""

import anndata as ad
import pandas as pd

from pertcal.calibration import score_calibration_controls
from pertcal.evaluate import read_gene_spaces
from pertcal.io import log_to, read_rows, write_parquet

log_to(snakemake.log[0])
p = snakemake.params
folds = {task: pd.read_parquet(snakemake.input[task]) for task in p.tasks}
scores = score_calibration_controls(
    read_rows(snakemake.input.stats, layers=("sum",)), folds, ad.read_h5ad(snakemake.input.degs_gt),
    methods=p.methods, dataset=snakemake.wildcards.dataset, seed=p.seed, deg_alpha=p.deg_alpha,
    panels=p.panels, spaces=read_gene_spaces(snakemake.input),
)
write_parquet(scores, snakemake.output[0])
