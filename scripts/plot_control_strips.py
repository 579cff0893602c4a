"""Rule plot_control_strips: negative control vs technical vs interpolated duplicate per metric, one (dataset, task)."""

import pandas as pd

from pertcal.io import log_to
from pertcal.metrics import METRICS
from pertcal.plots import control_strips, save_figure
from pertcal.stats import compare_controls, select_metrics

log_to(snakemake.log[0])
w = snakemake.wildcards
source = snakemake.input[0]
metrics = select_metrics(
    pd.read_parquet(source, filters=[("dataset", "==", w.dataset), ("task", "==", w.task)]),
    w.dataset, w.task, METRICS, source=source,
)
title = f"{w.dataset}, {w.task} task: negative control vs technical and interpolated duplicate"
fig = control_strips(metrics, compare_controls(metrics, METRICS), METRICS, title)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
