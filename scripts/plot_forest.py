"""Rule plot_forest: per-metric forest plots of one (dataset, task) against one reference set."""

import pandas as pd

from pertcal.io import log_to
from pertcal.metrics import panel_specs
from pertcal.plots import forest_plot, save_figure

log_to(snakemake.log[0])
w = snakemake.wildcards
stats = pd.read_parquet(snakemake.input[0])
stats = stats[stats["comparison"] == w.comparison]
against = "the negative control (mean; control for Δpert metrics)" if w.comparison == "negative_control" else "the additive baseline"
p = snakemake.params
fig = forest_plot(stats, panel_specs(), f"{w.dataset}, {w.task} task: methods vs {against}", alpha=p.alpha, confidence=p.confidence)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
