"""Rule compute_drf: DRF per perturbation and metric for one dataset, from its control methods' metrics."""

from pertcal.drf import compute_drf
from pertcal.evaluate import read_metric_tables
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
write_parquet(compute_drf(read_metric_tables(snakemake.input)), snakemake.output[0])
