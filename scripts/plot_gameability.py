"""Rule plot_gameability: metrics × gaming predictors, how close each gets to the positive control."""

import pandas as pd

from pertcal.io import log_to
from pertcal.plots import gameability_heatmap, save_figure

log_to(snakemake.log[0])
save_figure(gameability_heatmap(pd.read_parquet(snakemake.input[0])), snakemake.output.pdf, snakemake.output.png)
