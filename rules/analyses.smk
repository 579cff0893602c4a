# The paper's remaining analyses (docs/method.md, "Analyses"): dataset quality (energy distances between
# perturbations, spread of DEG counts and cells per perturbation; DRF against them) and perturbation strength
# (per-gene errors by DEG significance; cell titration of the technical duplicate).

from pertcal.strength import check_edges

ANALYSES = config["analyses"]


# bin edges must increase from 0 (p-values: to 1): refused here, before any job runs
check_edges(ANALYSES["pvalue_edges"], "pvalue_edges", first=0, last=1)
check_edges(ANALYSES["deg_strata"], "deg_strata", first=0)

# both stream cells: one chunk, plus working copies of the P × G tables they read beside the cells (the strength
# analysis holds the truth and both references of every perturbation: 5.3 GiB at 9,800 × 8,248, bench_scale.py)
MEMORY_KIND.update(measure_dataset_quality="chunk_tables", measure_perturbation_strength="chunk_tables")


rule measure_dataset_quality:
    input:
        adata="results/{dataset}/processed.h5ad",
        degs_gt="results/{dataset}/degs_gt.h5ad",
    output:
        pairs="results/{dataset}/analyses/edist_pairs.parquet",
        perturbations="results/{dataset}/analyses/edist_perturbations.parquet",
        summary="results/{dataset}/analyses/quality.json",
    params:
        source=source_fingerprint,
        n_pcs=ANALYSES["n_pcs"],
        max_perturbations=ANALYSES["max_perturbations"],
        seed=config["seed"],
        deg_alpha=lambda wc: dataset_cfg(wc.dataset)["processing"]["deg_alpha"],
        chunk_nonzeros=lambda wc: dataset_cfg(wc.dataset)["processing"]["chunk_nonzeros"],
    log:
        "logs/measure_dataset_quality/{dataset}.log",
    benchmark:
        "benchmarks/measure_dataset_quality/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("measure_dataset_quality"),
    script:
        "../scripts/measure_dataset_quality.py"


rule measure_perturbation_strength:
    input:
        adata="results/{dataset}/processed.h5ad",
        halves="results/{dataset}/halves.parquet",
        stats="results/{dataset}/stats.h5ad",
        degs_gt="results/{dataset}/degs_gt.h5ad",
        # every (task, fold) of the dataset, in the order of params.tasks
        mean=lambda wc: [
            f"results/{wc.dataset}/predictions/{t}/fold{f}/mean.h5ad" for t in tasks_of(wc.dataset) for f in folds_of(wc.dataset, t)
        ],
        technical_duplicate=lambda wc: [
            f"results/{wc.dataset}/predictions/{t}/fold{f}/technical_duplicate.h5ad"
            for t in tasks_of(wc.dataset)
            for f in folds_of(wc.dataset, t)
        ],
    output:
        genes="results/{dataset}/analyses/strength_genes.parquet",
        titration="results/{dataset}/analyses/titration.parquet",
    params:
        source=source_fingerprint,
        tasks=lambda wc: [t for t in tasks_of(wc.dataset) for f in folds_of(wc.dataset, t)],
        pvalue_edges=ANALYSES["pvalue_edges"],
        sizes=ANALYSES["titration_sizes"],
        repeats=ANALYSES["titration_repeats"],
        deg_strata=ANALYSES["deg_strata"],
        max_perturbations=ANALYSES["max_perturbations"],
        seed=config["seed"],
        deg_alpha=lambda wc: dataset_cfg(wc.dataset)["processing"]["deg_alpha"],
        chunk_nonzeros=lambda wc: dataset_cfg(wc.dataset)["processing"]["chunk_nonzeros"],
    log:
        "logs/measure_perturbation_strength/{dataset}.log",
    benchmark:
        "benchmarks/measure_perturbation_strength/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("measure_perturbation_strength"),
    script:
        "../scripts/measure_perturbation_strength.py"


rule plot_drf_vs_quality:
    input:
        drf="results/calibration/drf.parquet",
        quality=expand("results/{dataset}/analyses/quality.json", dataset=DATASETS),
    output:
        spearman="results/analyses/drf_vs_quality_spearman.parquet",
        pdf="results/figures/drf_vs_quality.pdf",
        png=report(
            "results/figures/drf_vs_quality.png",
            caption="../report/drf_vs_quality.rst",
            category="Calibration",
            labels={"figure": "DRF vs dataset quality", "positive control": "interpolated duplicate"},
        ),
    params:
        positive_control="interpolated_duplicate",
        min_perturbations=STATS["min_perturbations"],
        n_pcs=ANALYSES["n_pcs"],
        max_perturbations=ANALYSES["max_perturbations"],
    log:
        "logs/plot_drf_vs_quality/plot_drf_vs_quality.log",
    benchmark:
        "benchmarks/plot_drf_vs_quality/plot_drf_vs_quality.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_drf_vs_quality"),
    script:
        "../scripts/plot_drf_vs_quality.py"


rule plot_perturbation_strength:
    input:
        genes=expand("results/{dataset}/analyses/strength_genes.parquet", dataset=DATASETS),
        titration=expand("results/{dataset}/analyses/titration.parquet", dataset=DATASETS),
    output:
        genes_pdf="results/figures/strength_genes.pdf",
        genes_png=report(
            "results/figures/strength_genes.png",
            caption="../report/strength_genes.rst",
            category="Perturbation strength",
            labels={"figure": "per-gene error by DEG significance"},
        ),
        titration_pdf="results/figures/titration.pdf",
        titration_png=report(
            "results/figures/titration.png",
            caption="../report/titration.rst",
            category="Perturbation strength",
            labels={"figure": "cell titration"},
        ),
    params:
        deg_strata=ANALYSES["deg_strata"],
        sizes=ANALYSES["titration_sizes"],
        repeats=ANALYSES["titration_repeats"],
    log:
        "logs/plot_perturbation_strength/plot_perturbation_strength.log",
    benchmark:
        "benchmarks/plot_perturbation_strength/plot_perturbation_strength.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_perturbation_strength"),
    script:
        "../scripts/plot_perturbation_strength.py"


# what `all` builds of the analyses (their tables are inputs of these)
ANALYSES_OUTPUTS = [
    f"results/figures/{name}.{ext}" for name in ("drf_vs_quality", "strength_genes", "titration") for ext in ("pdf", "png")
] + ["results/analyses/drf_vs_quality_spearman.parquet"]
