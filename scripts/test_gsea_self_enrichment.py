"""Rule test_gsea_self_enrichment: preranked GSEA of each perturbed regulator's own target set, ranked by the gt-half
t statistic and by every method's predicted Δ against control."""

from pertcal.gsea import read_gmt, regulator_sets, self_enrichment_table
from pertcal.io import log_to, write_parquet

log_to(snakemake.log[0])
p, i = snakemake.params, snakemake.input
table = self_enrichment_table(
    i.degs_gt,
    {(task, int(fold)): path for (task, fold), path in zip(p.folds, i.controls)},
    {(task, int(fold), method): path for (task, fold, method), path in zip(p.runs, i.predictions)},
    regulator_sets(read_gmt(i.gene_sets)),
    n_permutations=p.permutations, min_set_size=p.min_set_size, seed=p.seed,
)
write_parquet(table, snakemake.output[0])
