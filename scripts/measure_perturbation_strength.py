"""Rule measure_perturbation_strength: per-gene errors of the mean baseline and the technical duplicate by gt-half
DEG significance, and the cell titration of the technical duplicate (one streamed pass over the td-half cells)."""

import anndata as ad
import numpy as np
import pandas as pd

from pertcal.cells import CellReader, read_part
from pertcal.degs import deg_matrix
from pertcal.io import log_to, read_rows, write_parquet
from pertcal.quality import choose_perturbations
from pertcal.reduce import half_means
from pertcal.strength import METHODS, fold_gene_errors, gene_error_table, subsample_means, titration_cells
from pertcal.strength import titration_draws, titration_errors
from pertcal.summary import n_degs

log_to(snakemake.log[0])
w, p, inp = snakemake.wildcards, snakemake.params, snakemake.input
truth = half_means(read_rows(inp.stats, where={"half": ["gt"]}, layers=("sum",)), "gt")
degs_gt = read_rows(inp.degs_gt, layers=("pval_adj",))
sums, references = [], {m: [] for m in METHODS}
for task, mean_path, dup_path in zip(p.tasks, inp.mean, inp.technical_duplicate):
    preds = {m: ad.read_h5ad(path).to_df() for m, path in zip(METHODS, (mean_path, dup_path))}
    pval = deg_matrix(degs_gt, preds["mean"].index, preds["mean"].columns, "pval_adj", np.nan)
    sums.append(fold_gene_errors(truth, preds, pval, p.pvalue_edges).assign(task=task))
    for m in METHODS:
        references[m].append(preds[m])
genes = gene_error_table(pd.concat(sums, ignore_index=True)[["task", *sums[0].columns.drop("task")]], p.pvalue_edges)
write_parquet(genes.assign(dataset=w.dataset)[["dataset", *genes.columns]], snakemake.output.genes)

references = {m: pd.concat(frames) for m, frames in references.items()}
counts = n_degs(degs_gt, alpha=p.deg_alpha)
tested = choose_perturbations(
    references["mean"].index.intersection(counts.index), max_perturbations=p.max_perturbations, seed=p.seed
)
obs = read_part(inp.adata, "obs", dataset=w.dataset)
cells = titration_cells(pd.read_parquet(inp.halves), obs.index, tested)
draws, indicator = titration_draws(cells, len(obs), sizes=p.sizes, repeats=p.repeats, seed=p.seed)
with CellReader(inp.adata, dataset=w.dataset, max_nonzeros=p.chunk_nonzeros) as reader:
    means = subsample_means(reader, indicator)
genes_order = read_part(inp.adata, "var", dataset=w.dataset).index
table = titration_errors(
    draws, means, truth[genes_order], {m: f[genes_order] for m, f in references.items()},
    counts, p.deg_strata,
)
write_parquet(table.assign(dataset=w.dataset)[["dataset", *table.columns]], snakemake.output.titration)
