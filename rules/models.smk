# Models: train on a fold's train/val cells, then predict its test perturbations, through the one command every
# model container runs (`pertcal-model train|predict`, docs/models.md). Predictions land where the baselines' do.
import json

from pertcal.models import jobs as model_jobs

MODEL_PATTERN = "|".join(sorted(MODELS)) or "(?!)"
MODEL_BASELINE_CLASH = sorted(set(MODELS) & set(config["baselines"]))
if MODEL_BASELINE_CLASH:
    raise ValueError(f"config 'models': {MODEL_BASELINE_CLASH[0]!r} is also a baseline name; rename the model")

model_params = lambda wc: model_jobs.job_params(
    MODELS[installed_model(wc.method)],
    seed=config["seed"],
    dataset=wc.dataset,
    simulated=is_simulated(wc.dataset),
)
model_resources = lambda rule_name: {
    key: (
        lambda wc, attempt, key=key: model_jobs.resource(
            MODELS[wc.method], key, config_resources(rule_name), attempt, simulated=is_simulated(wc.dataset)
        )
    )
    for key in model_jobs.resource_keys(MODELS, config_resources(rule_name))
}
# local cores of a job = the CPUs it asks a cluster for
model_threads = lambda rule_name: model_resources(rule_name)["cpus_per_task"]


rule train_model:
    input:
        data="results/{dataset}/processed.h5ad",
        folds="results/{dataset}/folds_{task}.parquet",
        files=lambda wc: model_input_files(model_params(wc)),
    output:
        directory("results/{dataset}/models/{task}/fold{fold}/{method}"),
    wildcard_constraints:
        method=MODEL_PATTERN,
    params:
        source=source_fingerprint,
        model=lambda wc: MODELS[wc.method].get("model", wc.method),
        hyper=lambda wc: json.dumps(model_params(wc), sort_keys=True),
        device=lambda wc: MODELS[wc.method].get("device", "auto"),
    threads: model_threads("train_model")
    log:
        "logs/train_model/{dataset}/{task}/fold{fold}/{method}.log",
    benchmark:
        "benchmarks/train_model/{dataset}/{task}/fold{fold}/{method}.tsv"
    conda:
        lambda wc: f"../envs/{MODELS[wc.method].get('env', 'models')}.yaml"
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
        source=source_fingerprint,
        device=lambda wc: MODELS[wc.method].get("device", "auto"),
    threads: model_threads("predict_model")
    log:
        "logs/predict_model/{dataset}/{task}/fold{fold}/{method}.log",
    benchmark:
        "benchmarks/predict_model/{dataset}/{task}/fold{fold}/{method}.tsv"
    conda:
        lambda wc: f"../envs/{MODELS[wc.method].get('env', 'models')}.yaml"
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
    resources:
        **rule_resources("simulate_gene2go"),
    script:
        "../scripts/simulate_gene2go.py"
