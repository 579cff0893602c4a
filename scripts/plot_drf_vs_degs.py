"""Rule plot_drf_vs_degs: per-perturbation DRF of MSE and WMSE against its number of DEGs (gt half)."""

import pandas as pd

from pertcal.io import log_to, read_rows
from pertcal.plots import drf_vs_degs, save_figure
from pertcal.summary import n_degs

log_to(snakemake.log[0])
p = snakemake.params
counts = pd.concat(
    n_degs(read_rows(path, layers=("pval_adj",)), alpha=alpha).rename("n_degs").reset_index().assign(dataset=ds)
    for ds, path, alpha in zip(p.datasets, snakemake.input.degs, p.deg_alpha)
)
fig = drf_vs_degs(pd.read_parquet(snakemake.input.drf), counts, positive_control=p.positive_control)
save_figure(fig, snakemake.output.pdf, snakemake.output.png)
