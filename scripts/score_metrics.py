"""Rule score_metrics: the 13 metrics of one method on one fold."""

import anndata as ad
import pandas as pd

from pertcal.evaluate import score_fold
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
scores = score_fold(
    ad.read_h5ad(snakemake.input.prediction),
    ad.read_h5ad(snakemake.input.stats),
    pd.read_parquet(snakemake.input.folds),
    int(snakemake.wildcards.fold),
    pd.read_parquet(snakemake.input.degs_gt),
    deg_alpha=snakemake.params.deg_alpha,
    source=snakemake.input.prediction,
)
write_parquet(scores, snakemake.output[0])
