"""From a `models:` config entry to one train/predict job: its hyperparameters, input files and resources.

Used by rules/models.smk; no torch import, so the workflow's DAG is built without loading any model.
"""

from __future__ import annotations

# A hyperparameter whose name ends like this names an input file: it becomes a rule input (tracked, bound into
# containers) and "{dataset}" in it is replaced by the dataset's name.
FILE_SUFFIXES = ("_file", "_path")
# For a resource that neither the model's `resources:` nor config `resources.rules.<rule>` sets.
RESOURCE_FALLBACK = {"gpu": 0, "cpus_per_task": 1, "runtime": 60, "mem_mb": 4000}


def job_params(spec: dict, *, seed: int, dataset: str, simulated: bool) -> dict:
    """Hyperparameters of one job: `seed`, then the entry's `params`, then `simulated_params` on simulated data."""
    params = {"seed": seed, **spec.get("params", {})}
    if simulated:
        params.update(spec.get("simulated_params", {}))
    return {
        k: v.format(dataset=dataset) if k.endswith(FILE_SUFFIXES) and isinstance(v, str) else v
        for k, v in params.items()
    }


def input_files(params: dict) -> list[str]:
    """The files a job's hyperparameters name (embedding table, GEARS gene2go), sorted by parameter name."""
    return [v for k, v in sorted(params.items()) if k.endswith(FILE_SUFFIXES) and v is not None]


def resource_keys(specs: dict, rule_defaults: dict) -> list[str]:
    """Every resource some model (or the rule's config) sets, plus GPU, CPUs, runtime and memory."""
    keys = set(RESOURCE_FALLBACK) | set(rule_defaults)
    return sorted(keys | {k for spec in specs.values() for k in spec.get("resources", {})})


def resource(spec: dict, key: str, rule_defaults: dict, attempt: int = 1):
    """The model's value for a resource, else the rule's, else the fallback; memory grows with the retry attempt."""
    value = spec.get("resources", {}).get(key, rule_defaults.get(key))
    value = RESOURCE_FALLBACK.get(key, "") if value is None else value
    return value * attempt if key == "mem_mb" else value
