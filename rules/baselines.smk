# Baselines (controls and simple models) written in the same prediction format as models.

from pertcal.baselines import READS as BASELINE_READS


rule predict_baseline:
    input:
        stats="results/{dataset}/stats.h5ad",
        folds="results/{dataset}/folds_{task}.parquet",
        # the td DEG matrices only for the baselines that read them (the interpolated duplicate)
        degs_td=lambda wc: f"results/{wc.dataset}/degs_td.h5ad" if BASELINE_READS[wc.method].degs_td else [],
    output:
        "results/{dataset}/predictions/{task}/fold{fold}/{method}.h5ad",
    wildcard_constraints:
        method="|".join(config["baselines"]),
    params:
        source=source_fingerprint,
        modality=lambda wc: dataset_cfg(wc.dataset)["modality"],
        linear=lambda wc: config.get("linear_baseline", {}) if wc.method == "linear" else {},
    log:
        "logs/predict_baseline/{dataset}/{task}/fold{fold}/{method}.log",
    benchmark:
        "benchmarks/predict_baseline/{dataset}/{task}/fold{fold}/{method}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("predict_baseline"),
    script:
        "../scripts/predict_baseline.py"
