"""Rule score_metrics: the configured panels' metrics of one method on one fold."""

import anndata as ad
import pandas as pd

from pertcal.evaluate import read_gene_spaces, read_scoring_inputs, score_fold
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
fold = int(snakemake.wildcards.fold)
folds = pd.read_parquet(snakemake.input.folds)
stats, degs_gt = read_scoring_inputs(snakemake.input.stats, snakemake.input.degs_gt, folds, fold)
scores = score_fold(
    ad.read_h5ad(snakemake.input.prediction), stats, folds, fold, degs_gt,
    deg_alpha=snakemake.params.deg_alpha, panels=snakemake.params.panels, spaces=read_gene_spaces(snakemake.input),
    source=snakemake.input.prediction,
)
write_parquet(scores, snakemake.output[0])
