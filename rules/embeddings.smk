# Gene embeddings of the foundation models (ESM2, Geneformer, scGPT, GenePT) from their fetched checkpoints: one job
# per source, read by the fMLP variants through `embedding_file: resources/embeddings/{source}.parquet`.
import importlib.util
import json

# the sources that load a checkpoint with transformers (scGPT and GenePT need torch or nothing more)
TRANSFORMERS_SOURCES = {"esm2", "geneformer"}


def embed_inputs(wildcards):
    """The source's files; a transformers source is refused while the DAG is built when the package is missing
    and no conda env or image provides it (not with a traceback in the job)."""
    deployed = {DeploymentMethod.CONDA, DeploymentMethod.APPTAINER} & workflow.deployment_settings.deployment_method
    if wildcards.source in TRANSFORMERS_SOURCES and not deployed and importlib.util.find_spec("transformers") is None:
        raise WorkflowError(
            f"config 'embeddings': {wildcards.source!r} needs the Python package transformers, which is not "
            "installed: run `python -m pip install -e .` from the repository root, or run with "
            "--software-deployment-method conda (or apptainer)"
        )
    return embedding_files(wildcards.source)


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
