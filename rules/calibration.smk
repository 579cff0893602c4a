# Dynamic Range Fraction of every metric, per perturbation, and the calibration checks on simulated truth.

rule compute_drf:
    input:
        lambda wc: metric_tables(datasets=[wc.dataset], methods=CONTROL_METHODS),
    output:
        "results/{dataset}/drf.parquet",
    params:
        source=source_fingerprint,
    log:
        "logs/compute_drf/{dataset}.log",
    benchmark:
        "benchmarks/compute_drf/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("compute_drf"),
    script:
        "../scripts/compute_drf.py"


rule collect_drf:
    input:
        expand("results/{dataset}/drf.parquet", dataset=DATASETS),
    output:
        "results/calibration/drf.parquet",
    log:
        "logs/collect_drf/collect_drf.log",
    benchmark:
        "benchmarks/collect_drf/collect_drf.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("collect_drf"),
    script:
        "../scripts/collect_tables.py"


rule summarize_calibration:
    input:
        drf="results/calibration/drf.parquet",
        summary="results/summary.csv",
        degs=expand("results/{dataset}/degs_gt.h5ad", dataset=DATASETS),
        truth=lambda wc: list(simulated_truth(wc).values()),
    output:
        "results/calibration/summary.json",
    params:
        datasets=DATASETS,
        simulated=lambda wc: list(simulated_truth(wc)),
        deg_alpha=config["processing"]["deg_alpha"],
    log:
        "logs/summarize_calibration/summarize_calibration.log",
    benchmark:
        "benchmarks/summarize_calibration/summarize_calibration.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("summarize_calibration"),
    script:
        "../scripts/summarize_calibration.py"
