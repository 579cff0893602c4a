"""Rule simulate_dataset: a simulated Perturb-seq dataset (raw counts) and its ground-truth effects."""

import inspect
import logging

from pertcal.io import PertcalInputError, log_to, write_h5ad, write_parquet
from pertcal.simulate import simulate_perturbseq

log_to(snakemake.log[0])
dataset = snakemake.wildcards.dataset
where = f"dataset {dataset}, config.yaml datasets.{dataset}.source.simulate"
params = dict(snakemake.params.simulate)
unknown = sorted(set(params) - (set(inspect.signature(simulate_perturbseq).parameters) - {"modality", "seed"}))
if unknown:
    raise PertcalInputError(f"{where}: unknown simulator parameter(s) {unknown} (modality and seed are set elsewhere)")
try:
    adata, truth = simulate_perturbseq(**params, modality=snakemake.params.modality, seed=snakemake.params.seed)
except PertcalInputError as err:
    raise PertcalInputError(f"{where}: {err}") from err
logging.info("%s: simulated %d cells x %d genes, %d perturbations, %d truth rows (%d DEGs)", dataset,
             adata.n_obs, adata.n_vars, adata.obs["perturbation"].nunique() - 1, len(truth), truth["is_deg"].sum())
write_h5ad(adata, snakemake.output.raw)
write_parquet(truth, snakemake.output.truth)
