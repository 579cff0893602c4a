"""Rule plot_deg_sensitivity: DRF per metric under each DEG test variant, DEG counts and precision on simulated truth."""

import pandas as pd

from pertcal.io import log_to
from pertcal.plots import deg_sensitivity_plot, save_figure

log_to(snakemake.log[0])
fig = deg_sensitivity_plot(
    pd.read_parquet(snakemake.input.drf), pd.read_csv(snakemake.input.degs), positive_control=snakemake.params.positive_control
)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
