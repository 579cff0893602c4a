"""Rule plot_perturbation_strength: per-gene errors by DEG significance and the cell titration, every dataset."""

from pertcal import analysis_plots
from pertcal.io import concat_tables, log_to
from pertcal.plots import save_figure
from pertcal.strength import stratum_order

log_to(snakemake.log[0])
out = snakemake.output
save_figure(analysis_plots.gene_errors(concat_tables(snakemake.input.genes)), out.genes_pdf, out.genes_png)
titration = concat_tables(snakemake.input.titration)
save_figure(analysis_plots.titration(titration, stratum_order(snakemake.params.deg_strata)), out.titration_pdf, out.titration_png)
