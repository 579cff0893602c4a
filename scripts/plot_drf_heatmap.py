"""Rules plot_drf_heatmap / plot_drf_heatmap_techdup: metrics × datasets heatmap of mean DRF for one positive control."""

import pandas as pd

from pertcal.io import log_to
from pertcal.metrics import panel_specs
from pertcal.plots import drf_heatmap, save_figure
from pertcal.stats import summarize_drf

log_to(snakemake.log[0])
p = snakemake.params
cells = summarize_drf(pd.read_parquet(snakemake.input.drf), p.positive_control, p.min_perturbations)
fig = drf_heatmap(
    cells, pd.read_csv(snakemake.input.summary), list(panel_specs()),
    positive_control=p.positive_control, min_perturbations=p.min_perturbations,
)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
