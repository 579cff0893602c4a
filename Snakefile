# pertcal: calibrated benchmarking of single-cell perturbation models. Stages in the order data flows.
include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/embeddings.smk"
include: "rules/preprocess.smk"
include: "rules/split.smk"
include: "rules/reduce.smk"
include: "rules/degs.smk"
include: "rules/summary.smk"
include: "rules/baselines.smk"
include: "rules/models.smk"
include: "rules/metrics.smk"
include: "rules/calibration.smk"
include: "rules/stats.smk"
include: "rules/figures.smk"
include: "rules/analyses.smk"
include: "rules/gsea.smk"
include: "rules/report.smk"
include: "rules/containers.smk"
include: "rules/cluster.smk"


rule all:
    default_target: True
    input:
        "results/benchmark.done",
        "results/calibration/summary.json",
        "results/metrics.parquet",
        ANALYSES_OUTPUTS,
        "results/calibration/calibrated_scores.parquet",
        GSEA_OUTPUTS,
