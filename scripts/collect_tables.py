"""Rules collect_metrics / collect_drf / collect_summaries / collect_stats: per-dataset tables (parquet or JSON) → one table."""

from pertcal.io import atomic_path, concat_tables, log_to

log_to(snakemake.log[0])
table = concat_tables(snakemake.input)
out = snakemake.output[0]
with atomic_path(out) as tmp:
    if out.endswith(".csv"):
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
