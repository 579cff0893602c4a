"""Rule plot_panel_drf: metrics of every selected panel × datasets, mean DRF with its bootstrap CI."""

import pandas as pd

from pertcal.io import log_to
from pertcal.plots import panel_drf_heatmap, save_figure

log_to(snakemake.log[0])
p = snakemake.params
fig = panel_drf_heatmap(
    pd.read_parquet(snakemake.input.drf), pd.read_csv(snakemake.input.summary), positive_control=p.positive_control,
    negative_control=p.negative_control, min_perturbations=p.min_perturbations, confidence=p.confidence,
)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
