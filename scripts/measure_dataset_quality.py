"""Rule measure_dataset_quality: energy distances between perturbations (pairs, per perturbation) and the dataset's
quality measures (e-distance, CV of DEG counts and of cells per perturbation)."""

from pertcal.cells import read_part
from pertcal.io import log_to, read_rows, write_json, write_parquet
from pertcal.quality import dataset_energy_distances, quality_summary
from pertcal.summary import n_degs

log_to(snakemake.log[0])
w, p = snakemake.wildcards, snakemake.params
obs = read_part(snakemake.input.adata, "obs", dataset=w.dataset)
var = read_part(snakemake.input.adata, "var", dataset=w.dataset)
pairs, per_pert = dataset_energy_distances(
    snakemake.input.adata, obs, var, dataset=w.dataset, n_pcs=p.n_pcs, max_perturbations=p.max_perturbations,
    seed=p.seed, chunk_nonzeros=p.chunk_nonzeros,
)
degs = n_degs(read_rows(snakemake.input.degs_gt, layers=("pval_adj",)), alpha=p.deg_alpha)
cells = obs.loc[~obs["is_control"].to_numpy(dtype=bool), "perturbation"].astype(str).value_counts()
summary = quality_summary(pairs, per_pert, degs, cells, dataset=w.dataset)
write_parquet(pairs, snakemake.output.pairs)
write_parquet(per_pert.assign(dataset=w.dataset)[["dataset", *per_pert.columns]], snakemake.output.perturbations)
write_json({**summary, "n_pcs": per_pert.attrs["n_pcs"]}, snakemake.output.summary)
