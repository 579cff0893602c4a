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


# --- calibration of every metric (issue 12): CIs, BDS, calibrated scores, mean_loo and gaming predictors ---------
# Behind their own targets (`snakemake calibration`, or any file below): the calibration controls are scored on
# every fold, which the default `all` does not need.

CALIBRATION = config["calibration"]
# the calibration controls scored next to the fold's controls: the extra negative controls and the gaming predictors
CALIBRATION_METHODS = [n for n in CALIBRATION["negative_controls"] if n != "mean"] + CALIBRATION["gaming"]


rule score_calibration_controls:
    input:
        unpack(folds_files),
        unpack(gene_space_files),
        stats="results/{dataset}/stats.h5ad",
        degs_gt="results/{dataset}/degs_gt.h5ad",
    output:
        "results/{dataset}/calibration/scores.parquet",
    params:
        source=source_fingerprint,
        methods=CALIBRATION_METHODS,
        tasks=lambda wc: tasks_of(wc.dataset),
        seed=config["seed"],
        deg_alpha=lambda wc: dataset_cfg(wc.dataset)["processing"]["deg_alpha"],
        panels=config["metrics"],
    log:
        "logs/score_calibration_controls/{dataset}.log",
    benchmark:
        "benchmarks/score_calibration_controls/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("score_calibration_controls"),
    script:
        "../scripts/score_calibration_controls.py"


CALIBRATION_TABLES = {
    "drf": "results/calibration/panel_drf.parquet",
    "bds": "results/calibration/bds.parquet",
    "gameability": "results/calibration/gameability.parquet",
    "trust": "results/calibration/trust.csv",
}


rule calibrate_metrics:
    input:
        controls=metric_tables(methods=CONTROL_METHODS),
        scores=expand("results/{dataset}/calibration/scores.parquet", dataset=DATASETS),
    output:
        **CALIBRATION_TABLES,
        html=report(
            "results/calibration/trust.html",
            caption="../report/trust.rst",
            category="Calibration",
            labels={"table": "which metrics to trust"},
        ),
    params:
        seed=config["seed"],
        negative_controls=CALIBRATION["negative_controls"],
        min_drf=CALIBRATION["min_drf"],
        n_resamples=config["stats"]["n_resamples"],
        confidence=config["stats"]["confidence"],
        alpha=config["stats"]["alpha"],
        min_perturbations=config["stats"]["min_perturbations"],
    log:
        "logs/calibrate_metrics/calibrate_metrics.log",
    benchmark:
        "benchmarks/calibrate_metrics/calibrate_metrics.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("calibrate_metrics"),
    script:
        "../scripts/calibrate_metrics.py"


rule calibrate_methods:
    input:
        "results/metrics.parquet",
    output:
        "results/calibration/calibrated_scores.parquet",
    log:
        "logs/calibrate_methods/calibrate_methods.log",
    benchmark:
        "benchmarks/calibrate_methods/calibrate_methods.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("calibrate_methods"),
    script:
        "../scripts/calibrate_methods.py"


# The Wilcoxon rank-sum variant of the DEG test needs the cells, not the sufficient statistics: its own rule per half,
# run only when calibration.deg_tests names it.
DEG_WILCOXON = "results/{dataset}/calibration/degs_wilcoxon_{half}.h5ad"


rule test_degs_wilcoxon:
    input:
        adata="results/{dataset}/processed.h5ad",
        halves="results/{dataset}/halves.parquet",
        # sizes the declared memory (perturbations × genes), as for reduce_cells
        qc="results/{dataset}/qc.json",
    output:
        DEG_WILCOXON,
    params:
        source=source_fingerprint,
        min_cells=lambda wc: dataset_cfg(wc.dataset)["processing"]["min_cells_degs"],
        rest_includes_controls=rest_includes_controls,
        chunk_nonzeros=lambda wc: dataset_cfg(wc.dataset)["processing"]["chunk_nonzeros"],
    log:
        "logs/test_degs_wilcoxon/{dataset}_{half}.log",
    benchmark:
        "benchmarks/test_degs_wilcoxon/{dataset}_{half}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("test_degs_wilcoxon"),
    script:
        "../scripts/test_degs_wilcoxon.py"


rule deg_sensitivity:
    input:
        unpack(folds_files),
        unpack(gene_space_files),
        stats="results/{dataset}/stats.h5ad",
        truth=lambda wc: simulated_truth(wc).get(wc.dataset, []),
        wilcoxon=(
            expand(DEG_WILCOXON, dataset="{dataset}", half=("gt", "td"))
            if any(v["test"] == "wilcoxon" for v in CALIBRATION["deg_tests"])
            else []
        ),
    output:
        drf="results/{dataset}/calibration/deg_sensitivity_drf.parquet",
        degs="results/{dataset}/calibration/deg_sensitivity_degs.parquet",
    params:
        source=source_fingerprint,
        tasks=lambda wc: tasks_of(wc.dataset),
        variants=[[v["test"], v["alpha"]] for v in CALIBRATION["deg_tests"]],
        min_cells=lambda wc: dataset_cfg(wc.dataset)["processing"]["min_cells_degs"],
        td_rest_includes_controls=lambda wc: dataset_cfg(wc.dataset)["processing"]["td_rest_includes_controls"],
        panels=config["metrics"],
        modality=lambda wc: dataset_cfg(wc.dataset)["modality"],
    log:
        "logs/deg_sensitivity/{dataset}.log",
    benchmark:
        "benchmarks/deg_sensitivity/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("deg_sensitivity"),
    script:
        "../scripts/deg_sensitivity.py"


use rule collect_drf as collect_deg_sensitivity_drf with:
    input:
        expand("results/{dataset}/calibration/deg_sensitivity_drf.parquet", dataset=DATASETS),
    output:
        "results/calibration/deg_sensitivity_drf.parquet",
    log:
        "logs/collect_deg_sensitivity/drf.log",
    benchmark:
        "benchmarks/collect_deg_sensitivity/drf.tsv"


use rule collect_drf as collect_deg_sensitivity_degs with:
    input:
        expand("results/{dataset}/calibration/deg_sensitivity_degs.parquet", dataset=DATASETS),
    output:
        "results/calibration/deg_sensitivity_degs.csv",
    log:
        "logs/collect_deg_sensitivity/degs.log",
    benchmark:
        "benchmarks/collect_deg_sensitivity/degs.tsv"
