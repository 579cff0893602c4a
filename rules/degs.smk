# DEGs per half from the sufficient statistics (Welch t, scanpy's t-test_overestim_var, BH): the long table for
# users and the (perturbations × genes) matrices that the later stages read by name.


rule test_degs:
    input:
        "results/{dataset}/stats.h5ad",
    output:
        table="results/{dataset}/degs_{half}.parquet",
        matrix="results/{dataset}/degs_{half}.h5ad",
    params:
        min_cells=lambda wc: dataset_cfg(wc.dataset)["processing"]["min_cells_degs"],
        rest_includes_controls=rest_includes_controls,
    log:
        "logs/test_degs/{dataset}_{half}.log",
    benchmark:
        "benchmarks/test_degs/{dataset}_{half}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("test_degs"),
    script:
        "../scripts/test_degs.py"
