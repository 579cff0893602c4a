"""Rule plot_ideal_gap: methods × metrics heatmap of the fraction of the ideal gap closed, one (dataset, task)."""

from pertcal.io import log_to
from pertcal.metrics import METRICS, panel_specs
from pertcal.plots import ideal_gap_heatmap, save_figure
from pertcal.stats import ideal_gap_closed, read_task_metrics

log_to(snakemake.log[0])
w = snakemake.wildcards
metrics = read_task_metrics(snakemake.input[0], w.dataset, w.task, METRICS)
title = f"{w.dataset}, {w.task} task: fraction of the ideal gap closed"
save_figure(ideal_gap_heatmap(ideal_gap_closed(metrics, METRICS), panel_specs(), title), snakemake.output.pdf, snakemake.output.png)
