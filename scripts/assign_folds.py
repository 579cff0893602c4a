"""Rule assign_folds: the task's cross-validation folds as a (perturbation, fold, split) table."""

from pertcal.cells import read_part
from pertcal.io import log_to, write_parquet
from pertcal.split import assign_folds_combo, assign_folds_single

log_to(snakemake.log[0])
source = snakemake.input[0]
perturbations = read_part(source, "obs", dataset=snakemake.wildcards.dataset)["perturbation"].unique().tolist()
p, where = snakemake.params, {"dataset": snakemake.wildcards.dataset, "source": source}
if snakemake.wildcards.task == "single":
    folds = assign_folds_single(perturbations, n_folds=p.n_folds, val_fraction=p.val_fraction, seed=p.seed, **where)
else:
    folds = assign_folds_combo(perturbations, seed=p.seed, **where)
write_parquet(folds, snakemake.output[0])
