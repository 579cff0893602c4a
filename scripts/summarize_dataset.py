"""Rule summarize_dataset: results/{dataset}/summary.json (cells, genes, perturbations, cells/perturbation, mean DEGs,
and the fraction of perturbations each of its models' embedding tables covers)."""

import anndata as ad

from pertcal.io import log_to, read_rows, write_json
from pertcal.models.embeddings import read_embedding
from pertcal.summary import dataset_summary, embedding_coverage

log_to(snakemake.log[0])
adata = ad.read_h5ad(snakemake.input.adata, backed="r")
degs_gt = read_rows(snakemake.input.degs_gt, layers=("pval_adj",))
summary = dataset_summary(adata.obs, degs_gt, dataset=snakemake.wildcards.dataset, alpha=snakemake.params.deg_alpha)
tables = {src: read_embedding(path, where=f"embedding {src}").index for src, path in snakemake.params.embeddings.items()}
coverage = embedding_coverage(adata.obs, tables)
write_json({**summary, "n_genes": int(adata.n_vars), **coverage}, snakemake.output[0])
