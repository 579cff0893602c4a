# Raw data: a verified download, or the simulator for the offline demo panel. Local paths are read in place (after
# their checksum, when one is declared).


rule download_dataset:
    output:
        "resources/{dataset}/raw.h5ad",
    params:
        urls=lambda wc: dataset_cfg(wc.dataset)["source"]["url"],
        sha256=lambda wc: dataset_cfg(wc.dataset)["source"].get("sha256"),
        size=lambda wc: dataset_cfg(wc.dataset)["source"].get("size"),
    log:
        "logs/download_dataset/{dataset}.log",
    benchmark:
        "benchmarks/download_dataset/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    # fetch retries network errors itself; a wrong checksum or a non-h5ad body would only be downloaded again
    retries: 0
    resources:
        **rule_resources("download_dataset"),
    script:
        "../scripts/download_dataset.py"


rule verify_source:
    input:
        lambda wc: dataset_cfg(wc.dataset)["source"]["path"],
    output:
        "resources/{dataset}/source.sha256",
    params:
        source=source_fingerprint,
        sha256=lambda wc: dataset_cfg(wc.dataset)["source"]["sha256"],
    log:
        "logs/verify_source/{dataset}.log",
    benchmark:
        "benchmarks/verify_source/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("verify_source"),
    script:
        "../scripts/verify_source.py"


rule simulate_dataset:
    output:
        raw="resources/simulated/{dataset}/raw.h5ad",
        truth="resources/simulated/{dataset}/truth.parquet",
    params:
        simulate=lambda wc: dataset_cfg(wc.dataset)["source"]["simulate"],
        modality=lambda wc: dataset_cfg(wc.dataset)["modality"],
        seed=config["seed"],
    log:
        "logs/simulate_dataset/{dataset}.log",
    benchmark:
        "benchmarks/simulate_dataset/{dataset}.tsv"
    conda:
        "../envs/pertcal.yaml"
    resources:
        **rule_resources("simulate_dataset"),
    script:
        "../scripts/simulate_dataset.py"


# External resources (model checkpoints, GEARS's GO map, gene-set libraries): one local job per file, checksummed by
# the config's sha256 or pinned in the lock file on first download. A needed file that has no URL and is not in place
# stops the run here, before any job.
_missing = missing_without_url(RESOURCES, run_resources())
if _missing:
    raise PertcalInputError("; ".join(_missing))


rule fetch_resource:
    output:
        f"{LANDING_DIR}/{{resource}}",
    wildcard_constraints:
        resource="|".join(re.escape(name) for name in sorted(RESOURCES)) or "(?!)",
    params:
        urls=lambda wc: RESOURCES[wc.resource].get("url", []),
        sha256=lambda wc: RESOURCES[wc.resource].get("sha256"),
        size=lambda wc: RESOURCES[wc.resource].get("size"),
        lock=LOCK_FILE,
    log:
        "logs/fetch_resource/{resource}.log",
    benchmark:
        "benchmarks/fetch_resource/{resource}.tsv"
    conda:
        "../envs/pertcal.yaml"
    # fetch retries network errors itself; a wrong checksum would only be downloaded again
    retries: 0
    resources:
        **rule_resources("fetch_resource"),
    script:
        "../scripts/fetch_resource.py"
