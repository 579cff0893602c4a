"""Rule compute_stats: paired tests of every method against the controls, for one (dataset, task)."""

import pandas as pd

from pertcal.io import log_to, write_parquet
from pertcal.metrics import METRICS
from pertcal.stats import compare_methods, select_metrics

log_to(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
source = snakemake.input[0]
metrics = select_metrics(
    pd.read_parquet(source, filters=[("dataset", "==", w.dataset), ("task", "==", w.task)]),
    w.dataset, w.task, METRICS, source=source,
)
stats = compare_methods(metrics, METRICS, seed=p.seed, n_resamples=p.n_resamples, confidence=p.confidence)
write_parquet(stats, snakemake.output[0])
