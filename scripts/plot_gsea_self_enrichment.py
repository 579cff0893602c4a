"""Rule plot_gsea_self_enrichment: the NES of each regulator's own target set per method and dataset, and a summary
table (tested sets, median NES, share significant, share with the sign of the gt half)."""

import pandas as pd

from pertcal.gsea import summarize_self_enrichment
from pertcal.io import atomic_path, log_to
from pertcal.plots import gsea_nes, save_figure

log_to(snakemake.log[0])
p, out = snakemake.params, snakemake.output
table = pd.concat(pd.read_parquet(path).assign(dataset=ds) for ds, path in zip(p.datasets, snakemake.input))
save_figure(gsea_nes(table, alpha=p.alpha), out.pdf, out.png)
summary = summarize_self_enrichment(table, alpha=p.alpha)
with atomic_path(out.csv) as tmp:
    summary.to_csv(tmp, index=False)
with atomic_path(out.html) as tmp:
    tmp.write_text(summary.to_html(index=False, float_format="{:.3f}".format, border=0), encoding="utf-8")
