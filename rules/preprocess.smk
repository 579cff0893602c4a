# Harmonize labels, QC, normalize, cap cells, select genes.


rule preprocess_dataset:
    input:
        raw_input,
        verified=verified_source,
    output:
        adata="results/{dataset}/processed.h5ad",
        qc="results/{dataset}/qc.json",
    params:
        source=source_fingerprint,
        harmonize=preprocess_params,
        values=lambda wc: dataset_cfg(wc.dataset)["values"],
        modality=lambda wc: dataset_cfg(wc.dataset)["modality"],
        cell_line=lambda wc: dataset_cfg(wc.dataset)["cell_line"],
        processing=lambda wc: dataset_cfg(wc.dataset)["processing"],
        tasks=lambda wc: tasks_of(wc.dataset),
        seed=config["seed"],
        chunk_nonzeros=lambda wc: dataset_cfg(wc.dataset)["processing"]["chunk_nonzeros"],
    log:
        "logs/preprocess_dataset/{dataset}.log",
    benchmark:
        "benchmarks/preprocess_dataset/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("preprocess_dataset"),
    script:
        "../scripts/preprocess_dataset.py"
