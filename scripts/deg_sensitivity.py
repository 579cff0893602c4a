"""Rule deg_sensitivity: DRF of every metric and the DEG calls of one dataset under each DEG test variant."""

import anndata as ad
import pandas as pd

from pertcal.calibration import deg_sensitivity
from pertcal.evaluate import read_gene_spaces
from pertcal.io import log_to, read_rows, write_parquet
from pertcal.metrics import metric_specs

log_to(snakemake.log[0])
p = snakemake.params
folds = {task: pd.read_parquet(snakemake.input[task]) for task in p.tasks}
drf, degs = deg_sensitivity(
    read_rows(snakemake.input.stats, layers=("sum", "sumsq")), folds,
    pd.read_parquet(snakemake.input.truth) if snakemake.input.truth else None,
    dataset=snakemake.wildcards.dataset, variants=[tuple(v) for v in p.variants], min_cells=p.min_cells,
    td_rest_includes_controls=p.td_rest_includes_controls, panels=p.panels, modality=p.modality, specs=metric_specs(),
    spaces=read_gene_spaces(snakemake.input),
    wilcoxon={m.uns["half"]: m for m in map(ad.read_h5ad, snakemake.input.wilcoxon)} or None,
)
write_parquet(drf, snakemake.output.drf)
write_parquet(degs, snakemake.output.degs)
