"""Rules collect_metrics / collect_drf / collect_summaries / collect_stats: concatenate per-dataset tables (parquet or JSON) into one table."""

from pertcal.io import atomic_path, concat_tables, log_to

log_to(snakemake.log[0])
table = concat_tables(snakemake.input)
with atomic_path(snakemake.output[0]) as tmp:
    table.to_csv(tmp, index=False) if snakemake.output[0].endswith(".csv") else table.to_parquet(tmp, index=False)
