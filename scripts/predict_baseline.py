"""Rule predict_baseline: one baseline's predictions for a fold's test perturbations, from only what it reads."""

import pandas as pd

from pertcal.baselines import as_prediction, fold_data, predict_baseline, read_baseline_inputs
from pertcal.io import log_to, write_h5ad

log_to(snakemake.log[0])
w = snakemake.wildcards
folds = pd.read_parquet(snakemake.input.folds)
# degs_td is an empty list for the baselines that do not read it
stats, degs_td = read_baseline_inputs(w.method, snakemake.input.stats, folds, int(w.fold), snakemake.input.degs_td or None)
d = fold_data(stats, folds, int(w.fold), degs_td=degs_td, modality=snakemake.params.modality)
pred = predict_baseline(w.method, d, **snakemake.params.linear)
write_h5ad(as_prediction(pred, method=w.method, dataset=w.dataset, task=w.task, fold=int(w.fold)), snakemake.output[0])
