# Gene embeddings of the foundation models (ESM2, Geneformer, scGPT, GenePT) from their fetched checkpoints: one job
# per source, read by the fMLP variants through `embedding_file: resources/embeddings/{source}.parquet`.
import json

EMBED_RESOURCE_KEYS = model_jobs.resource_keys(EMBEDDINGS, config_resources("embed_genes"))
embed_resources = {
    key: (
        lambda wc, attempt, key=key: model_jobs.resource(
            EMBEDDINGS[wc.source], key, config_resources("embed_genes"), attempt
        )
    )
    for key in EMBED_RESOURCE_KEYS
}


rule embed_genes:
    input:
        unpack(embed_inputs),
    output:
        "resources/embeddings/{source}.parquet",
    wildcard_constraints:
        source="|".join(sorted(EMBEDDINGS)) or "(?!)",
    params:
        files=lambda wc: EMBEDDINGS[wc.source]["files"],
        embed=lambda wc: json.dumps(EMBEDDINGS[wc.source].get("params", {}), sort_keys=True),
        device=lambda wc: EMBEDDINGS[wc.source].get("device", "auto"),
    threads: embed_resources["cpus_per_task"]
    log:
        "logs/embed_genes/{source}.log",
    benchmark:
        "benchmarks/embed_genes/{source}.tsv"
    conda:
        "../envs/embed.yaml"
    container:
        lambda wc: EMBEDDINGS[wc.source].get("container")
    resources:
        **embed_resources,
    script:
        "../scripts/embed_genes.py"
