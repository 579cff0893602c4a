"""Rule calibrate_metrics: DRF with bootstrap CIs, BDS, gameability and the "which metrics to trust" table."""

import pandas as pd

from pertcal.calibration import bds_table, calibration_drf, gameability, summarize_drf_ci, trust_table
from pertcal.evaluate import read_metric_tables
from pertcal.io import atomic_path, log_to, write_parquet
from pertcal.metrics import metric_specs
from pertcal.tables import trust_html

log_to(snakemake.log[0])
p, out = snakemake.params, snakemake.output
specs = metric_specs()
metrics = pd.concat([read_metric_tables(snakemake.input.controls)] + [pd.read_parquet(f) for f in snakemake.input.scores],
                    ignore_index=True)
drf = calibration_drf(metrics, specs, p.negative_controls)
drf_ci = summarize_drf_ci(drf, specs, seed=p.seed, n_resamples=p.n_resamples, confidence=p.confidence,
                          min_perturbations=p.min_perturbations)
bds = bds_table(metrics, specs, negative_controls=p.negative_controls, seed=p.seed, n_permutations=p.n_resamples)
gaming = gameability(metrics, specs, alpha=p.alpha)
trust = trust_table(drf_ci, bds, gaming, alpha=p.alpha, min_drf=p.min_drf)
write_parquet(drf_ci, out.drf)
write_parquet(bds, out.bds)
write_parquet(gaming, out.gameability)
with atomic_path(out.trust) as tmp:
    trust.to_csv(tmp, index=False)
with atomic_path(out.html) as tmp:
    tmp.write_text(trust_html(trust, min_drf=p.min_drf, alpha=p.alpha, confidence=p.confidence))
