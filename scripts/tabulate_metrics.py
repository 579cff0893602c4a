"""Rule tabulate_metrics: mean ± SEM per method and metric for one (dataset, task), as CSV, Markdown, LaTeX and HTML."""

from pertcal import tables
from pertcal.io import atomic_path, log_to
from pertcal.metrics import METRICS
from pertcal.stats import read_task_metrics, summarize_methods

log_to(snakemake.log[0])
w, out = snakemake.wildcards, snakemake.output
metrics = read_task_metrics(snakemake.input[0], w.dataset, w.task, METRICS)
summary = summarize_methods(metrics, METRICS)
title = f"{w.dataset}, {w.task} task: metrics per method"
with atomic_path(out.csv) as tmp:
    summary.to_csv(tmp, index=False)
for path, render in ((out.md, tables.to_markdown), (out.tex, tables.to_latex), (out.html, tables.to_html)):
    with atomic_path(path) as tmp:
        tmp.write_text(render(summary, METRICS, title), encoding="utf-8")
