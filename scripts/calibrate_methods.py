"""Rule calibrate_methods: every method's per-perturbation calibrated score (m_pos − m) / (m_pos − m_neg)."""

import pandas as pd

from pertcal.calibration import calibrated_scores
from pertcal.io import log_to, write_parquet
from pertcal.metrics import metric_specs

log_to(snakemake.log[0])
write_parquet(calibrated_scores(pd.read_parquet(snakemake.input[0]), metric_specs()), snakemake.output[0])
