"""Rule assign_folds: the task's cross-validation folds as a (perturbation, fold, split) table."""

import anndata as ad

from pertcal.io import log_to, write_parquet
from pertcal.split import assign_folds_combo, assign_folds_single

log_to(snakemake.log[0])
perturbations = ad.read_h5ad(snakemake.input[0], backed="r").obs["perturbation"].unique().tolist()
p = snakemake.params
if snakemake.wildcards.task == "single":
    folds = assign_folds_single(perturbations, n_folds=p.n_folds, val_fraction=p.val_fraction, seed=p.seed)
else:
    folds = assign_folds_combo(perturbations, seed=p.seed)
write_parquet(folds, snakemake.output[0])
