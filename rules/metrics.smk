# The metrics of the configured panels (config `metrics`) per (dataset, task, fold, method) and one tidy table of all of them.


rule score_metrics:
    input:
        prediction="results/{dataset}/predictions/{task}/fold{fold}/{method}.h5ad",
        stats="results/{dataset}/stats.h5ad",
        folds="results/{dataset}/folds_{task}.parquet",
        degs_gt="results/{dataset}/degs_gt.h5ad",
    output:
        "results/{dataset}/metrics/{task}/fold{fold}/{method}.parquet",
    params:
        deg_alpha=lambda wc: dataset_cfg(wc.dataset)["processing"]["deg_alpha"],
        panels=config["metrics"],
    log:
        "logs/score_metrics/{dataset}/{task}/fold{fold}/{method}.log",
    benchmark:
        "benchmarks/score_metrics/{dataset}/{task}/fold{fold}/{method}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("score_metrics"),
    script:
        "../scripts/score_metrics.py"


rule collect_dataset_metrics:
    input:
        lambda wc: metric_tables(datasets=[wc.dataset]),
    output:
        "results/{dataset}/metrics.parquet",
    log:
        "logs/collect_dataset_metrics/{dataset}.log",
    benchmark:
        "benchmarks/collect_dataset_metrics/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("collect_dataset_metrics"),
    script:
        "../scripts/collect_metrics.py"


# Per-dataset tables first, so editing one dataset re-collects only its own before this concatenation.
rule collect_metrics:
    input:
        expand("results/{dataset}/metrics.parquet", dataset=DATASETS),
    output:
        "results/metrics.parquet",
    log:
        "logs/collect_metrics/collect_metrics.log",
    benchmark:
        "benchmarks/collect_metrics/collect_metrics.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("collect_metrics"),
    script:
        "../scripts/collect_tables.py"
