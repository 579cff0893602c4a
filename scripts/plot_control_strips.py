"""Rule plot_control_strips: negative control vs technical vs interpolated duplicate per metric, one (dataset, task)."""

from pertcal.io import log_to
from pertcal.metrics import METRICS, panel_specs
from pertcal.plots import control_strips, save_figure
from pertcal.stats import compare_controls, read_task_metrics

log_to(snakemake.log[0])
w = snakemake.wildcards
metrics = read_task_metrics(snakemake.input[0], w.dataset, w.task, METRICS)
title = f"{w.dataset}, {w.task} task: negative control vs technical and interpolated duplicate"
fig = control_strips(metrics, compare_controls(metrics, METRICS), panel_specs(), title)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
