"""Rule collect_dataset_metrics: a dataset's metric files → results/{dataset}/metrics.parquet (keys from the paths)."""

from pertcal.evaluate import read_metric_tables
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
write_parquet(read_metric_tables(snakemake.input), snakemake.output[0])
