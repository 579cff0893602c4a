"""Rule compute_stats: paired tests of every method against the controls, for one (dataset, task)."""

from pertcal.io import log_to, write_parquet
from pertcal.metrics import METRICS
from pertcal.stats import compare_methods, read_task_metrics

log_to(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
metrics = read_task_metrics(snakemake.input[0], w.dataset, w.task, METRICS)
stats = compare_methods(metrics, METRICS, seed=p.seed, n_resamples=p.n_resamples, confidence=p.confidence)
write_parquet(stats, snakemake.output[0])
