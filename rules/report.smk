# The HTML report (`snakemake --report results/report.html`) and the `benchmark` target that builds
# everything it shows: DRF heatmaps, statistics, tables and figures.


report: "../report/workflow.rst"


rule render_dataset_summary:
    input:
        "results/summary.csv",
    output:
        report(
            "results/tables/summary.html",
            caption="../report/dataset_summary.rst",
            category="Datasets and configuration",
            labels={"result": "dataset summary"},
        ),
    log:
        "logs/render_dataset_summary/render_dataset_summary.log",
    benchmark:
        "benchmarks/render_dataset_summary/render_dataset_summary.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("render_dataset_summary"),
    script:
        "../scripts/render_dataset_summary.py"


rule write_run_config:
    output:
        yaml="results/run_config.yaml",
        html=report(
            "results/run_config.html",
            caption="../report/run_config.rst",
            category="Datasets and configuration",
            labels={"result": "configuration"},
        ),
    params:
        config=config,
    log:
        "logs/write_run_config/write_run_config.log",
    benchmark:
        "benchmarks/write_run_config/write_run_config.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("write_run_config"),
    script:
        "../scripts/write_run_config.py"


# every file the benchmark target stands for (and the report shows)
BENCHMARK_OUTPUTS = (
    [f"results/{name}.{ext}" for name in ("drf_heatmap", "drf_heatmap_techdup", "drf_mse_vs_wmse") for ext in ("pdf", "png")]
    + [f"results/figures/drf_vs_degs.{ext}" for ext in ("pdf", "png")]
    + [f"results/tables/{ds}_{task}.{ext}" for ds, task in DATASET_TASKS for ext in ("csv", "md", "tex", "html")]
    + [
        f"results/figures/{ds}/{name}.{ext}"
        for ds, task in DATASET_TASKS
        for name in [f"forest_{task}_vs_{c}" for c in COMPARISONS[task]] + [f"ideal_gap_{task}", f"controls_{task}"]
        for ext in ("pdf", "png")
    ]
    + ["results/stats/all.parquet", "results/tables/summary.html", "results/run_config.yaml", "results/run_config.html"]
)


rule benchmark:
    input:
        BENCHMARK_OUTPUTS,
    output:
        "results/benchmark.done",
    log:
        "logs/benchmark/benchmark.log",
    benchmark:
        "benchmarks/benchmark/benchmark.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("benchmark"),
    shell:
        "printf '%s\\n' {input:q} > {output:q} 2> {log:q}"


# every file of the metric calibration (issue 12): `snakemake calibration` (not part of `all`; see README)
CALIBRATION_OUTPUTS = (
    list(CALIBRATION_TABLES.values())
    + ["results/calibration/trust.html", "results/calibration/calibrated_scores.parquet"]
    + [f"results/calibration/{name}.{ext}" for name in ("panel_drf", "drf_negative_controls", "gameability", "deg_sensitivity") for ext in ("pdf", "png")]
)


rule calibration:
    input:
        CALIBRATION_OUTPUTS,
    output:
        "results/calibration/calibration.done",
    log:
        "logs/calibration/calibration.log",
    benchmark:
        "benchmarks/calibration/calibration.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("calibration"),
    shell:
        "printf '%s\\n' {input:q} > {output:q} 2> {log:q}"
