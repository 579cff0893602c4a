# One streaming pass over cells to per-(perturbation, half) sufficient statistics.


rule reduce_cells:
    input:
        adata="results/{dataset}/processed.h5ad",
        halves="results/{dataset}/halves.parquet",
        # read only to size the job's memory (rules/common.smk memory_mb)
        qc="results/{dataset}/qc.json",
    output:
        "results/{dataset}/stats.h5ad",
    params:
        source=source_fingerprint,
        chunk_nonzeros=lambda wc: dataset_cfg(wc.dataset)["processing"]["chunk_nonzeros"],
    log:
        "logs/reduce_cells/{dataset}.log",
    benchmark:
        "benchmarks/reduce_cells/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("reduce_cells"),
    script:
        "../scripts/reduce_cells.py"
