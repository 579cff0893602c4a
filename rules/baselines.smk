# Baselines (controls and simple models) written in the same prediction format as models.


rule predict_baseline:
    input:
        stats="results/{dataset}/stats.h5ad",
        folds="results/{dataset}/folds_{task}.parquet",
        degs_td="results/{dataset}/degs_td.parquet",
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
    script:
        "../scripts/predict_baseline.py"
