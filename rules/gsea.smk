# GSEA self-enrichment (issue 10): per perturbed regulator with a target set in the library (Enrichr's ENCODE and
# ChEA consensus TF library for real data; on simulated data, the simulator's true targets of each regulator), a
# preranked GSEA of its own set on the gt-half t statistic and on each method's predicted Δ against control.

GSEA = config["analyses"]["gsea"]


rule write_simulated_gene_sets:
    input:
        "resources/simulated/{dataset}/truth.parquet",
    output:
        "resources/simulated/{dataset}/gene_sets.gmt",
    log:
        "logs/write_simulated_gene_sets/{dataset}.log",
    benchmark:
        "benchmarks/write_simulated_gene_sets/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("write_simulated_gene_sets"),
    script:
        "../scripts/write_simulated_gene_sets.py"


rule test_gsea_self_enrichment:
    input:
        gene_sets=gene_set_library,
        degs_gt="results/{dataset}/degs_gt.h5ad",
        controls=lambda wc: [
            f"results/{wc.dataset}/predictions/{task}/fold{fold}/control.h5ad" for task, fold in gsea_folds(wc.dataset)
        ],
        predictions=lambda wc: [
            f"results/{wc.dataset}/predictions/{task}/fold{fold}/{method}.h5ad"
            for task, fold, method in gsea_runs(wc.dataset)
        ],
    output:
        "results/{dataset}/gsea_self_enrichment.parquet",
    params:
        source=source_fingerprint,
        folds=lambda wc: gsea_folds(wc.dataset),
        runs=lambda wc: gsea_runs(wc.dataset),
        permutations=GSEA["permutations"],
        min_set_size=GSEA["min_set_size"],
        seed=config["seed"],
    log:
        "logs/test_gsea_self_enrichment/{dataset}.log",
    benchmark:
        "benchmarks/test_gsea_self_enrichment/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("test_gsea_self_enrichment"),
    script:
        "../scripts/test_gsea_self_enrichment.py"


rule plot_gsea_self_enrichment:
    input:
        expand("results/{dataset}/gsea_self_enrichment.parquet", dataset=DATASETS),
    output:
        pdf="results/figures/gsea_self_enrichment.pdf",
        png=report(
            "results/figures/gsea_self_enrichment.png",
            caption="../report/gsea_self_enrichment.rst",
            category="Analyses",
            labels={"result": "GSEA self-enrichment: NES per method"},
        ),
        csv="results/tables/gsea_self_enrichment.csv",
        html=report(
            "results/tables/gsea_self_enrichment.html",
            caption="../report/gsea_self_enrichment_table.rst",
            category="Analyses",
            labels={"result": "GSEA self-enrichment: summary table"},
        ),
    params:
        datasets=DATASETS,
        alpha=STATS["alpha"],
        permutations=GSEA["permutations"],
        min_set_size=GSEA["min_set_size"],
    log:
        "logs/plot_gsea_self_enrichment/plot_gsea_self_enrichment.log",
    benchmark:
        "benchmarks/plot_gsea_self_enrichment/plot_gsea_self_enrichment.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("plot_gsea_self_enrichment"),
    script:
        "../scripts/plot_gsea_self_enrichment.py"


GSEA_OUTPUTS = [
    "results/figures/gsea_self_enrichment.png",
    "results/figures/gsea_self_enrichment.pdf",
    "results/tables/gsea_self_enrichment.html",
    "results/tables/gsea_self_enrichment.csv",
]
