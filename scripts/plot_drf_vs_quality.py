"""Rule plot_drf_vs_quality: mean DRF per dataset × metric against each dataset-quality measure, with Spearman's rho."""

import pandas as pd

from pertcal.analysis_plots import drf_vs_quality as figure
from pertcal.io import concat_tables, log_to, write_parquet
from pertcal.plots import save_figure
from pertcal.quality import drf_vs_quality
from pertcal.stats import summarize_drf

log_to(snakemake.log[0])
p = snakemake.params
mean_drf = summarize_drf(pd.read_parquet(snakemake.input.drf), p.positive_control, p.min_perturbations)
points, rho = drf_vs_quality(mean_drf, concat_tables(snakemake.input.quality))
write_parquet(rho, snakemake.output.spearman)
save_figure(figure(points, rho, positive_control=p.positive_control), snakemake.output.pdf, snakemake.output.png)
