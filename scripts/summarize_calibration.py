"""Rule summarize_calibration: results/calibration/summary.json — DEG recovery on simulated truth and the DRF checks."""

import pandas as pd

from pertcal.io import log_to, read_rows, write_json
from pertcal.summary import calibration_summary, deg_recovery

log_to(snakemake.log[0])
p = snakemake.params
degs = dict(zip(p.datasets, snakemake.input.degs))
recovery = {
    ds: deg_recovery(read_rows(degs[ds], layers=("pval_adj",)), pd.read_parquet(truth), alpha=p.deg_alpha)
    for ds, truth in zip(p.simulated, snakemake.input.truth)
}
summary = calibration_summary(pd.read_parquet(snakemake.input.drf), pd.read_csv(snakemake.input.summary), recovery)
write_json(summary, snakemake.output[0])
