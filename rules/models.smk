# Models: train on a fold's train/val cells, then predict its test perturbations, through the one command every
# model container runs (`pertcal-model train|predict`, docs/models.md). Predictions land where the baselines' do.
import json

# Hyperparameters whose name ends like this name input files: they become rule inputs (tracked, bound into
# containers), and "{dataset}" in them is filled in per dataset.
MODEL_FILE_SUFFIXES = ("_file", "_path")
# Used for a resource that neither the model's `resources:` nor config `resources.rules.<rule>` sets.
MODEL_RESOURCE_FALLBACK = {"gpu": 0, "cpus_per_task": 1, "runtime": 60, "mem_mb": 4000}
MODEL_PATTERN = "|".join(sorted(MODELS)) or "(?!)"

_clash = sorted(set(MODELS) & set(config["baselines"]))
if _clash:
    raise ValueError(f"config 'models': {_clash[0]!r} is also a baseline name; rename the model")


def model_params(method, dataset):
    """The model's hyperparameters for a dataset: seed, then `params`, then `simulated_params` on simulated data."""
    spec = MODELS[method]
    simulated = "simulate" in dataset_cfg(dataset)["source"]
    params = {"seed": config["seed"], **spec.get("params", {})}
    if simulated:
        params.update(spec.get("simulated_params", {}))
    return {
        k: v.format(dataset=dataset) if k.endswith(MODEL_FILE_SUFFIXES) and isinstance(v, str) else v
        for k, v in params.items()
    }


def model_files(wildcards):
    """Files named by the model's hyperparameters (embedding table, GEARS gene2go), so the DAG sees them."""
    params = model_params(wildcards.method, wildcards.dataset)
    return [v for k, v in sorted(params.items()) if k.endswith(MODEL_FILE_SUFFIXES) and v is not None]


def model_resource(rule_name, key, method):
    value = MODELS[method].get("resources", {}).get(key, rule_resources(rule_name).get(key))
    return MODEL_RESOURCE_FALLBACK.get(key, "") if value is None else value


def model_resources(rule_name):
    """Per-model resources (GPU, partition, runtime, memory × attempt on retry, …) as functions of the job."""
    keys = set(MODEL_RESOURCE_FALLBACK) | set(rule_resources(rule_name))
    keys |= {k for spec in MODELS.values() for k in spec.get("resources", {})}

    def get(key):
        if key == "mem_mb":
            return lambda wc, attempt: model_resource(rule_name, key, wc.method) * attempt
        return lambda wc: model_resource(rule_name, key, wc.method)

    return {key: get(key) for key in sorted(keys)}


def model_env(wildcards):
    return f"../envs/{MODELS[wildcards.method].get('env', 'models')}.yaml"


rule train_model:
    input:
        data="results/{dataset}/processed.h5ad",
        folds="results/{dataset}/folds_{task}.parquet",
        files=model_files,
    output:
        directory("results/{dataset}/models/{task}/fold{fold}/{method}"),
    wildcard_constraints:
        method=MODEL_PATTERN,
    params:
        model=lambda wc: MODELS[wc.method].get("model", wc.method),
        hyper=lambda wc: json.dumps(model_params(wc.method, wc.dataset), sort_keys=True),
        device=lambda wc: MODELS[wc.method].get("device", "auto"),
    threads: lambda wc: model_resource("train_model", "cpus_per_task", wc.method)
    log:
        "logs/train_model/{dataset}/{task}/fold{fold}/{method}.log",
    benchmark:
        "benchmarks/train_model/{dataset}/{task}/fold{fold}/{method}.tsv"
    conda:
        model_env
    container:
        lambda wc: MODELS[wc.method].get("container")
    resources:
        **model_resources("train_model"),
    shell:
        "pertcal-model train --model {params.model} --name {wildcards.method} --data {input.data}"
        " --folds {input.folds} --fold {wildcards.fold} --task {wildcards.task} --params {params.hyper:q}"
        " --out {output} --device {params.device} --threads {threads} > {log} 2>&1"


rule predict_model:
    input:
        checkpoint="results/{dataset}/models/{task}/fold{fold}/{method}",
        data="results/{dataset}/processed.h5ad",
        folds="results/{dataset}/folds_{task}.parquet",
    output:
        "results/{dataset}/predictions/{task}/fold{fold}/{method}.h5ad",
    wildcard_constraints:
        method=MODEL_PATTERN,
    params:
        device=lambda wc: MODELS[wc.method].get("device", "auto"),
    threads: lambda wc: model_resource("predict_model", "cpus_per_task", wc.method)
    log:
        "logs/predict_model/{dataset}/{task}/fold{fold}/{method}.log",
    benchmark:
        "benchmarks/predict_model/{dataset}/{task}/fold{fold}/{method}.tsv"
    conda:
        model_env
    container:
        lambda wc: MODELS[wc.method].get("container")
    resources:
        **model_resources("predict_model"),
    shell:
        "pertcal-model predict --checkpoint {input.checkpoint} --data {input.data} --folds {input.folds}"
        " --fold {wildcards.fold} --task {wildcards.task} --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"


rule simulate_gene2go:
    input:
        "results/{dataset}/processed.h5ad",
    output:
        "resources/simulated/{dataset}/gene2go.pkl",
    params:
        # a random map: GEARS needs GO terms for every gene, and simulated genes have no biology to annotate
        n_terms=100,
        terms_per_gene=3,
        seed=config["seed"],
    log:
        "logs/simulate_gene2go/{dataset}.log",
    benchmark:
        "benchmarks/simulate_gene2go/{dataset}.tsv"
    conda:
        "../envs/gears.yaml"
    script:
        "../scripts/simulate_gene2go.py"
