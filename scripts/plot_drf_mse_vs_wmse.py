"""Rule plot_drf_mse_vs_wmse: per-dataset DRF of MSE vs WMSE with paired one-sided Wilcoxon p (Bonferroni)."""

import pandas as pd

from pertcal.io import log_to
from pertcal.plots import drf_mse_vs_wmse, save_figure
from pertcal.stats import compare_drf_mse_wmse

log_to(snakemake.log[0])
p = snakemake.params
drf = pd.read_parquet(snakemake.input.drf)
order = pd.read_csv(snakemake.input.summary).sort_values(["mean_degs", "dataset"])["dataset"].tolist()
tests = compare_drf_mse_wmse(drf, p.positive_control, p.min_perturbations)
save_figure(drf_mse_vs_wmse(drf, tests, order, positive_control=p.positive_control), snakemake.output.pdf, snakemake.output.png)
