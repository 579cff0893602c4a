# Figures: the calibration (DRF heatmaps, MSE vs WMSE, DRF vs DEGs) and the benchmark (forest plots,
# ideal gap closed, controls). Each figure is a PDF plus a PNG; the PNG goes into the HTML report.


rule plot_drf_heatmap:
    input:
        drf="results/calibration/drf.parquet",
        summary="results/summary.csv",
    output:
        pdf="results/drf_heatmap.pdf",
        png=report(
            "results/drf_heatmap.png",
            caption="../report/drf_heatmap.rst",
            category="Calibration",
            labels={"figure": "DRF heatmap", "positive control": "interpolated duplicate"},
        ),
    params:
        positive_control="interpolated_duplicate",
        min_perturbations=STATS["min_perturbations"],
    log:
        "logs/plot_drf_heatmap/interpolated_duplicate.log",
    benchmark:
        "benchmarks/plot_drf_heatmap/interpolated_duplicate.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_drf_heatmap"),
    script:
        "../scripts/plot_drf_heatmap.py"


use rule plot_drf_heatmap as plot_drf_heatmap_techdup with:
    output:
        pdf="results/drf_heatmap_techdup.pdf",
        png=report(
            "results/drf_heatmap_techdup.png",
            caption="../report/drf_heatmap.rst",
            category="Calibration",
            labels={"figure": "DRF heatmap", "positive control": "technical duplicate"},
        ),
    params:
        positive_control="technical_duplicate",
        min_perturbations=STATS["min_perturbations"],
    log:
        "logs/plot_drf_heatmap/technical_duplicate.log",
    benchmark:
        "benchmarks/plot_drf_heatmap/technical_duplicate.tsv"


rule plot_drf_mse_vs_wmse:
    input:
        drf="results/calibration/drf.parquet",
        summary="results/summary.csv",
    output:
        pdf="results/drf_mse_vs_wmse.pdf",
        png=report(
            "results/drf_mse_vs_wmse.png",
            caption="../report/drf_mse_vs_wmse.rst",
            category="Calibration",
            labels={"figure": "DRF of MSE vs WMSE", "positive control": "interpolated duplicate"},
        ),
    params:
        positive_control="interpolated_duplicate",
        min_perturbations=STATS["min_perturbations"],
    log:
        "logs/plot_drf_mse_vs_wmse/plot_drf_mse_vs_wmse.log",
    benchmark:
        "benchmarks/plot_drf_mse_vs_wmse/plot_drf_mse_vs_wmse.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_drf_mse_vs_wmse"),
    script:
        "../scripts/plot_drf_mse_vs_wmse.py"


rule plot_drf_vs_degs:
    input:
        drf="results/calibration/drf.parquet",
        degs=expand("results/{dataset}/degs_gt.h5ad", dataset=DATASETS),
    output:
        pdf="results/figures/drf_vs_degs.pdf",
        png=report(
            "results/figures/drf_vs_degs.png",
            caption="../report/drf_vs_degs.rst",
            category="Calibration",
            labels={"figure": "DRF vs DEGs", "positive control": "interpolated duplicate"},
        ),
    params:
        datasets=DATASETS,
        deg_alpha=[dataset_cfg(ds)["processing"]["deg_alpha"] for ds in DATASETS],
        positive_control="interpolated_duplicate",
    log:
        "logs/plot_drf_vs_degs/plot_drf_vs_degs.log",
    benchmark:
        "benchmarks/plot_drf_vs_degs/plot_drf_vs_degs.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_drf_vs_degs"),
    script:
        "../scripts/plot_drf_vs_degs.py"


rule plot_forest:
    input:
        "results/stats/{dataset}_{task}.parquet",
    output:
        pdf="results/figures/{dataset}/forest_{task}_vs_{comparison}.pdf",
        png=report(
            "results/figures/{dataset}/forest_{task}_vs_{comparison}.png",
            caption="../report/forest.rst",
            category="Benchmark",
            subcategory="{dataset} ({task})",
            labels=lambda wc: {
                "dataset": wc.dataset,
                "task": wc.task,
                "result": f"forest plot vs {wc.comparison.replace('_', ' ')}",
            },
        ),
    wildcard_constraints:
        comparison="negative_control|additive",
    params:
        alpha=STATS["alpha"],
        # for the caption: the statistics behind the plot
        n_resamples=STATS["n_resamples"],
        confidence=STATS["confidence"],
    log:
        "logs/plot_forest/{dataset}_{task}_{comparison}.log",
    benchmark:
        "benchmarks/plot_forest/{dataset}_{task}_{comparison}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_forest"),
    script:
        "../scripts/plot_forest.py"


rule plot_ideal_gap:
    input:
        "results/{dataset}/metrics.parquet",
    output:
        pdf="results/figures/{dataset}/ideal_gap_{task}.pdf",
        png=report(
            "results/figures/{dataset}/ideal_gap_{task}.png",
            caption="../report/ideal_gap.rst",
            category="Benchmark",
            subcategory="{dataset} ({task})",
            labels={"dataset": "{dataset}", "task": "{task}", "result": "ideal gap closed"},
        ),
    log:
        "logs/plot_ideal_gap/{dataset}_{task}.log",
    benchmark:
        "benchmarks/plot_ideal_gap/{dataset}_{task}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_ideal_gap"),
    script:
        "../scripts/plot_ideal_gap.py"


rule plot_control_strips:
    input:
        "results/{dataset}/metrics.parquet",
    output:
        pdf="results/figures/{dataset}/controls_{task}.pdf",
        png=report(
            "results/figures/{dataset}/controls_{task}.png",
            caption="../report/controls.rst",
            category="Benchmark",
            subcategory="{dataset} ({task})",
            labels={"dataset": "{dataset}", "task": "{task}", "result": "controls: mean vs duplicates"},
        ),
    log:
        "logs/plot_control_strips/{dataset}_{task}.log",
    benchmark:
        "benchmarks/plot_control_strips/{dataset}_{task}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_control_strips"),
    script:
        "../scripts/plot_control_strips.py"


# --- calibration of every metric (issue 12) ---------------------------------------------------------------------


rule plot_panel_drf:
    input:
        drf="results/calibration/panel_drf.parquet",
        summary="results/summary.csv",
    output:
        pdf="results/calibration/panel_drf.pdf",
        png=report(
            "results/calibration/panel_drf.png",
            caption="../report/panel_drf.rst",
            category="Calibration",
            labels={"figure": "DRF of every metric panel", "positive control": "interpolated duplicate"},
        ),
    params:
        positive_control="interpolated_duplicate",
        negative_control="mean",
        min_perturbations=STATS["min_perturbations"],
        confidence=STATS["confidence"],
    log:
        "logs/plot_panel_drf/plot_panel_drf.log",
    benchmark:
        "benchmarks/plot_panel_drf/plot_panel_drf.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_panel_drf"),
    script:
        "../scripts/plot_panel_drf.py"


rule plot_drf_negative_controls:
    input:
        "results/calibration/panel_drf.parquet",
    output:
        pdf="results/calibration/drf_negative_controls.pdf",
        png=report(
            "results/calibration/drf_negative_controls.png",
            caption="../report/drf_negative_controls.rst",
            category="Calibration",
            labels={"figure": "DRF under each negative control", "positive control": "interpolated duplicate"},
        ),
    params:
        positive_control="interpolated_duplicate",
        confidence=STATS["confidence"],
    log:
        "logs/plot_drf_negative_controls/plot_drf_negative_controls.log",
    benchmark:
        "benchmarks/plot_drf_negative_controls/plot_drf_negative_controls.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_drf_negative_controls"),
    script:
        "../scripts/plot_drf_negative_controls.py"


rule plot_gameability:
    input:
        "results/calibration/gameability.parquet",
    output:
        pdf="results/calibration/gameability.pdf",
        png=report(
            "results/calibration/gameability.png",
            caption="../report/gameability.rst",
            category="Calibration",
            labels={"figure": "gaming predictors", "positive control": "interpolated duplicate"},
        ),
    log:
        "logs/plot_gameability/plot_gameability.log",
    benchmark:
        "benchmarks/plot_gameability/plot_gameability.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_gameability"),
    script:
        "../scripts/plot_gameability.py"


rule plot_deg_sensitivity:
    input:
        drf="results/calibration/deg_sensitivity_drf.parquet",
        degs="results/calibration/deg_sensitivity_degs.csv",
    output:
        pdf="results/calibration/deg_sensitivity.pdf",
        png=report(
            "results/calibration/deg_sensitivity.png",
            caption="../report/deg_sensitivity.rst",
            category="Calibration",
            labels={"figure": "DRF vs the DEG test", "positive control": "interpolated duplicate"},
        ),
    params:
        positive_control="interpolated_duplicate",
    log:
        "logs/plot_deg_sensitivity/plot_deg_sensitivity.log",
    benchmark:
        "benchmarks/plot_deg_sensitivity/plot_deg_sensitivity.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_deg_sensitivity"),
    script:
        "../scripts/plot_deg_sensitivity.py"
