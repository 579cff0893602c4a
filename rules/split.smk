# Technical-duplicate halves and cross-validation folds, as tables.


rule split_halves:
    input:
        "results/{dataset}/processed.h5ad",
    output:
        "results/{dataset}/halves.parquet",
    params:
        source=source_fingerprint,
        seed=config["seed"],
    log:
        "logs/split_halves/{dataset}.log",
    benchmark:
        "benchmarks/split_halves/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("split_halves"),
    script:
        "../scripts/split_halves.py"


rule assign_folds:
    input:
        "results/{dataset}/processed.h5ad",
    output:
        "results/{dataset}/folds_{task}.parquet",
    params:
        source=source_fingerprint,
        seed=config["seed"],
        n_folds=lambda wc: len(folds_of(wc.dataset, wc.task)),
        val_fraction=lambda wc: dataset_cfg(wc.dataset)["processing"]["val_fraction"],
    log:
        "logs/assign_folds/{dataset}_{task}.log",
    benchmark:
        "benchmarks/assign_folds/{dataset}_{task}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("assign_folds"),
    script:
        "../scripts/assign_folds.py"
