"""Rule render_dataset_summary: results/summary.csv as an HTML table for the report."""

import pandas as pd

from pertcal.io import atomic_path, log_to
from pertcal.tables import dataset_summary_html

log_to(snakemake.log[0])
with atomic_path(snakemake.output[0]) as tmp:
    tmp.write_text(dataset_summary_html(pd.read_csv(snakemake.input[0])), encoding="utf-8")
