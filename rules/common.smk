# Config loading, schema validation, the run's dataset list, and input functions. No computation.
import copy
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from pertcal.models.jobs import folds as model_folds, missing_distributions

min_version("9.0")


configfile: "config.yaml"


validate(config, "../schemas/config.schema.yaml")

DATASET_DEFAULTS = {
    "perturbation_column": "perturbation",
    "control_labels": ["control"],
    "combo_delimiter": "+",
    "gene_symbol_column": None,
    "values": "auto",
    "cell_line": "",
    "harmonizers": [],
    "tasks": ["single"],
}
DATASET_NAME = re.compile(r"^[a-z0-9_]+$")


def _run_datasets():
    run = config["run"]
    names = config["panels"].get(run) if isinstance(run, str) else run
    if names is None:
        raise ValueError(
            f"config 'run': {run!r} is neither a panel ({', '.join(sorted(config['panels']))}) nor a list of datasets"
        )
    for name in names:
        # names become paths and shell words: refuse anything but [a-z0-9_] before it reaches either
        if not DATASET_NAME.match(str(name)):
            raise ValueError(f"config 'run': dataset name {name!r} must match ^[a-z0-9_]+$")
        if name not in config["datasets"]:
            raise ValueError(f"config 'run': unknown dataset {name!r}; known: {', '.join(sorted(config['datasets']))}")
    return list(names)


DATASETS = _run_datasets()
MODELS = config.get("models") or {}


def dataset_cfg(dataset):
    """The dataset's config with defaults filled in (processing = global defaults + overrides)."""
    cfg = {**copy.deepcopy(DATASET_DEFAULTS), **copy.deepcopy(config["datasets"][dataset])}
    cfg["processing"] = {**config["processing"], **cfg.get("processing", {})}
    return cfg


def tasks_of(dataset):
    return dataset_cfg(dataset)["tasks"]


def folds_of(dataset, task):
    p = dataset_cfg(dataset)["processing"]
    return list(range(p["n_folds_single"] if task == "single" else p["n_folds_combo"]))


BASELINE_TASKS = {"linear": {"single"}, "additive": {"combo"}}


def baselines_of(task):
    return [b for b in config["baselines"] if task in BASELINE_TASKS.get(b, {"single", "combo"})]


def is_simulated(dataset):
    return "simulate" in dataset_cfg(dataset)["source"]


def method_folds(dataset, task, method):
    """The folds a method is scored on: every fold, except a model's `simulated_folds` on simulated data."""
    if method not in MODELS:
        return folds_of(dataset, task)
    return model_folds(MODELS[method], folds_of(dataset, task), simulated=is_simulated(dataset))


def models_of(task):
    return [m for m, spec in MODELS.items() if task in spec.get("tasks", ["single", "combo"])]


def methods_of(dataset, task):
    return baselines_of(task) + models_of(task)


def installed_model(method):
    """`method`, once its Python packages are found. Without a conda env or image for its jobs, a model whose
    packages are not installed is refused while the DAG is built, not with a traceback after the data stages."""
    implementation = MODELS[method].get("model", method)
    missing = missing_distributions(implementation)
    deployed = {DeploymentMethod.CONDA, DeploymentMethod.APPTAINER} & workflow.deployment_settings.deployment_method
    if missing and not deployed:
        raise WorkflowError(
            f"config 'models': {method!r} ({implementation}) needs the Python package(s) {', '.join(missing)}, "
            "which are not installed: run `python -m pip install -e .` from the repository root, or run with "
            "--software-deployment-method conda (or apptainer)"
        )
    return method


def rule_resources(rule_name):
    """Resources for a rule: config defaults, then the rule's overrides."""
    res = config.get("resources", {})
    return {**res.get("default", {}), **res.get("rules", {}).get(rule_name, {})}


def raw_input(wildcards):
    """Where the dataset's raw h5ad comes from: a download, a local path, or the simulator."""
    source = dataset_cfg(wildcards.dataset)["source"]
    if "path" in source:
        return source["path"]
    if "simulate" in source:
        return f"resources/simulated/{wildcards.dataset}/raw.h5ad"
    return f"resources/{wildcards.dataset}/raw.h5ad"


def fold_outputs(pattern, datasets=None, methods=None):
    """Expand a {dataset}/{task}/{fold}/{method} pattern over the run."""
    out = []
    for ds in datasets or DATASETS:
        for task in tasks_of(ds):
            for fold in folds_of(ds, task):
                for method in methods or methods_of(ds, task):
                    if fold in method_folds(ds, task, method):
                        out.append(pattern.format(dataset=ds, task=task, fold=fold, method=method))
    return out


def preprocess_params(wildcards):
    """The harmonizer settings of a dataset (tracked as params: editing them reruns its preprocessing)."""
    cfg = dataset_cfg(wildcards.dataset)
    keys = ("perturbation_column", "control_labels", "combo_delimiter", "gene_symbol_column", "harmonizers")
    return {k: cfg[k] for k in keys}


def metric_tables(wildcards=None, datasets=None, methods=None):
    """Per-(dataset, task, fold, method) metric files of the run (or of the given datasets/methods)."""
    return fold_outputs("results/{dataset}/metrics/{task}/fold{fold}/{method}.parquet", datasets, methods)


CONTROL_METHODS = ["control", "mean", "technical_duplicate", "interpolated_duplicate"]


def simulated_truth(wildcards):
    """Ground-truth tables of the run's simulated datasets, by dataset."""
    return {ds: f"resources/simulated/{ds}/truth.parquet" for ds in DATASETS if is_simulated(ds)}


wildcard_constraints:
    # only configured names: keeps results/calibration/… and results/stats/… from matching {dataset}
    dataset="|".join(sorted(config["datasets"])),
    task="single|combo",
    fold="[0-9]+",
    half="gt|td",
