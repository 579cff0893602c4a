# The metrics of the configured panels (config `metrics`) per (dataset, task, fold, method) and one tidy table of all of them.
# The gene_spaces panel's dataset-wide spaces (control HVGs, PC loadings) are made once per dataset, and only when
# that panel is scored (gene_space_files): the default DAG does not hold them.


rule select_hvgs:
    input:
        "results/{dataset}/processed.h5ad",
    output:
        "results/{dataset}/hvgs.parquet",
    params:
        n_hvgs=config["gene_spaces"]["n_hvgs"],
        chunk_nonzeros=lambda wc: dataset_cfg(wc.dataset)["processing"]["chunk_nonzeros"],
    log:
        "logs/select_hvgs/{dataset}.log",
    benchmark:
        "benchmarks/select_hvgs/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("select_hvgs"),
    script:
        "../scripts/select_hvgs.py"


rule compute_pcs:
    input:
        "results/{dataset}/stats.h5ad",
    output:
        "results/{dataset}/pcs.h5ad",
    params:
        n_pcs=config["gene_spaces"]["n_pcs"],
    log:
        "logs/compute_pcs/{dataset}.log",
    benchmark:
        "benchmarks/compute_pcs/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("compute_pcs"),
    script:
        "../scripts/compute_pcs.py"


rule score_metrics:
    input:
        unpack(gene_space_files),
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
