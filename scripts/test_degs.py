"""Rule test_degs: DEGs of one half from the sufficient statistics: the long table (written block by block) and
the (P, G) matrices the later stages read."""

from pertcal.degs import DEG_SCHEMA, test_degs
from pertcal.io import log_to, parquet_writer, read_rows, write_h5ad

log_to(snakemake.log[0])
half = snakemake.wildcards.half
with_controls = bool(snakemake.params.rest_includes_controls)
where = {"half": [half]} if with_controls else {"half": [half], "is_control": [False]}
stats = read_rows(snakemake.input[0], where=where, layers=("sum", "sumsq"))
with parquet_writer(snakemake.output.table, DEG_SCHEMA, statistics=["perturbation"]) as table:
    matrix = test_degs(
        stats, half, min_cells=snakemake.params.min_cells, rest_includes_controls=with_controls, sink=table.write_table
    )
write_h5ad(matrix, snakemake.output.matrix)
