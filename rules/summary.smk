# Per-dataset summary (the paper's Table S5) and the combined table.


rule summarize_dataset:
    input:
        adata="results/{dataset}/processed.h5ad",
        degs_gt="results/{dataset}/degs_gt.h5ad",
        embeddings=lambda wc: sorted(embedding_tables(wc).values()),
    output:
        "results/{dataset}/summary.json",
    params:
        source=source_fingerprint,
        deg_alpha=lambda wc: dataset_cfg(wc.dataset)["processing"]["deg_alpha"],
        embeddings=embedding_tables,
    log:
        "logs/summarize_dataset/{dataset}.log",
    benchmark:
        "benchmarks/summarize_dataset/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("summarize_dataset"),
    script:
        "../scripts/summarize_dataset.py"


rule collect_summaries:
    input:
        expand("results/{dataset}/summary.json", dataset=DATASETS),
    output:
        "results/summary.csv",
    log:
        "logs/collect_summaries/collect_summaries.log",
    benchmark:
        "benchmarks/collect_summaries/collect_summaries.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("collect_summaries"),
    script:
        "../scripts/collect_tables.py"
