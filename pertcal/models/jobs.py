"""From a `models:` config entry to one train/predict job: its hyperparameters, input files and resources.

Used by rules/models.smk; no torch import, so the workflow's DAG is built without loading any model.
"""

from __future__ import annotations

import importlib.util

# A hyperparameter whose name ends like this names an input file or directory (`_files`: a list of files): it
# becomes a rule input (tracked, bound into containers) and "{dataset}" in it is replaced by the dataset's name.
FILE_SUFFIXES = ("_file", "_path", "_dir", "_files")
# For a resource that neither the model's `resources:` nor config `resources.rules.<rule>` sets.
RESOURCE_FALLBACK = {"gpu": 0, "cpus_per_task": 1, "runtime": 60, "mem_mb": 4000}
# The modules an implementation imports beyond the core stages', with the distribution pyproject.toml pins for each.
TORCH = {"torch": "torch"}
IMPORTS = {
    "fmlp": TORCH,
    "linear_additive": TORCH,
    "latent_additive": TORCH,
    "decoder_only": TORCH,
    "gears": {**TORCH, "gears": "cell-gears", "torch_geometric": "torch-geometric"},
    "scgpt": TORCH,
    "sclambda": TORCH,
    "presage": TORCH,
}


def job_params(spec: dict, *, seed: int, dataset: str, simulated: bool) -> dict:
    """Hyperparameters of one job: `seed`, then the entry's `params`, then `simulated_params` on simulated data."""
    params = {"seed": seed, **spec.get("params", {})}
    if simulated:
        params.update(spec.get("simulated_params", {}))
    named = lambda v: v.format(dataset=dataset) if isinstance(v, str) else v  # noqa: E731
    return {
        k: ([named(x) for x in v] if isinstance(v, list) else named(v)) if k.endswith(FILE_SUFFIXES) else v
        for k, v in params.items()
    }


def input_files(params: dict) -> list[str]:
    """The files a job's hyperparameters name (embedding tables, GEARS gene2go, scGPT checkpoint directory),
    sorted by parameter name."""
    found = []
    for k, v in sorted(params.items()):
        if k.endswith(FILE_SUFFIXES):
            found += [x for x in (v if isinstance(v, list) else [v]) if x is not None]
    return found


def folds(spec: dict, all_folds: list[int], *, simulated: bool) -> list[int]:
    """The folds a model is trained and scored on: all, but only the first `simulated_folds` on simulated data."""
    return all_folds[: spec.get("simulated_folds", len(all_folds))] if simulated else all_folds


def resource_keys(specs: dict, rule_defaults: dict) -> list[str]:
    """Every resource some model (or the rule's config) sets, plus GPU, CPUs, runtime and memory."""
    keys = set(RESOURCE_FALLBACK) | set(rule_defaults)
    sections = ("resources", "simulated_resources")
    return sorted(keys | {k for spec in specs.values() for section in sections for k in spec.get(section, {})})


def resource(spec: dict, key: str, rule_defaults: dict, attempt: int = 1, *, simulated: bool = False):
    """The model's value for a resource (`simulated_resources` first on simulated data), else the rule's, else the
    fallback; memory grows with the retry attempt."""
    own = {**spec.get("resources", {}), **(spec.get("simulated_resources", {}) if simulated else {})}
    value = own.get(key, rule_defaults.get(key))
    value = RESOURCE_FALLBACK.get(key, "") if value is None else value
    return value * attempt if key == "mem_mb" else value


def missing_distributions(implementation: str) -> list[str]:
    """The distributions of the implementation's imports that this Python cannot find (found without importing)."""
    imports = IMPORTS.get(implementation, {})
    return [dist for module, dist in imports.items() if importlib.util.find_spec(module) is None]
