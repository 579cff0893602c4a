"""Rule predict_baseline: one baseline's predictions for a fold's test perturbations."""

import anndata as ad
import pandas as pd

from pertcal.baselines import as_prediction, fold_data, predict_baseline
from pertcal.io import log_to, write_h5ad

log_to(snakemake.log[0])
w = snakemake.wildcards
d = fold_data(
    ad.read_h5ad(snakemake.input.stats),
    pd.read_parquet(snakemake.input.folds),
    int(w.fold),
    degs_td=pd.read_parquet(snakemake.input.degs_td),
    modality=snakemake.params.modality,
)
pred = predict_baseline(w.method, d, **snakemake.params.linear)
write_h5ad(as_prediction(pred, method=w.method, dataset=w.dataset, task=w.task, fold=int(w.fold)), snakemake.output[0])
