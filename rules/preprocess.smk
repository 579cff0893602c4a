# Harmonize labels, QC, normalize, cap cells, select genes.

# The processing keys preprocessing reads: only they are its params, so changing a later stage's key (DEG test,
# folds' val_fraction, deg_alpha) reruns that stage and what follows it, not the whole dataset.
PREPROCESS_KEYS = (
    "duplicate_genes", "min_genes_per_cell", "min_cells_per_gene", "min_cells_per_perturbation", "max_control_cells",
    "target_sum", "n_hvg", "n_folds_single", "n_folds_combo",
)


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
        processing=lambda wc: {k: dataset_cfg(wc.dataset)["processing"][k] for k in PREPROCESS_KEYS},
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
