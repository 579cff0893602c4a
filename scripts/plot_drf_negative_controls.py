"""Rule plot_drf_negative_controls: DRF per metric and dataset under each negative-control option."""

import pandas as pd

from pertcal.io import log_to
from pertcal.plots import drf_negative_controls, save_figure

log_to(snakemake.log[0])
p = snakemake.params
fig = drf_negative_controls(pd.read_parquet(snakemake.input[0]), positive_control=p.positive_control, confidence=p.confidence)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
