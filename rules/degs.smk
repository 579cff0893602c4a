# DEGs per half from the sufficient statistics (Welch t, scanpy's t-test_overestim_var, BH).


rule test_degs:
    input:
        "results/{dataset}/stats.h5ad",
    output:
        "results/{dataset}/degs_{half}.parquet",
    params:
        min_cells=lambda wc: dataset_cfg(wc.dataset)["processing"]["min_cells_degs"],
    log:
        "logs/test_degs/{dataset}_{half}.log",
    benchmark:
        "benchmarks/test_degs/{dataset}_{half}.tsv"
    conda:
        "../envs/pertcal.yaml"
    script:
        "../scripts/test_degs.py"
