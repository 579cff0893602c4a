"""Rule plot_ideal_gap: methods × metrics heatmap of the fraction of the ideal gap closed, one (dataset, task)."""

import pandas as pd

from pertcal.io import log_to
from pertcal.metrics import METRICS
from pertcal.plots import ideal_gap_heatmap, save_figure
from pertcal.stats import ideal_gap_closed, select_metrics

log_to(snakemake.log[0])
w = snakemake.wildcards
source = snakemake.input[0]
metrics = select_metrics(
    pd.read_parquet(source, filters=[("dataset", "==", w.dataset), ("task", "==", w.task)]),
    w.dataset, w.task, METRICS, source=source,
)
title = f"{w.dataset}, {w.task} task: fraction of the ideal gap closed"
save_figure(ideal_gap_heatmap(ideal_gap_closed(metrics, METRICS), METRICS, title), snakemake.output.pdf, snakemake.output.png)
