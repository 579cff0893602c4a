"""Rule summarize_dataset: results/{dataset}/summary.json (cells, genes, perturbations, cells/perturbation, mean DEGs)."""

import anndata as ad

from pertcal.io import log_to, read_rows, write_json
from pertcal.summary import dataset_summary

log_to(snakemake.log[0])
adata = ad.read_h5ad(snakemake.input.adata, backed="r")
degs_gt = read_rows(snakemake.input.degs_gt, layers=("pval_adj",))
summary = dataset_summary(adata.obs, degs_gt, dataset=snakemake.wildcards.dataset, alpha=snakemake.params.deg_alpha)
write_json({**summary, "n_genes": int(adata.n_vars)}, snakemake.output[0])
