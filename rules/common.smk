# Config loading, schema validation, the run's dataset list, and input functions. No computation.
import copy
import difflib
import importlib.util
import inspect
import json
import os
import re
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from pertcal.models import jobs as model_jobs
from pertcal.models.jobs import folds as model_folds, missing_distributions
from pertcal.resources import LANDING_DIR, landing_path, missing_without_url

from pertcal.harmonize import HARMONIZERS
from pertcal.io import PertcalInputError
from pertcal.memory import job_memory_mb, machine_memory_mb

min_version("9.0")


configfile: "config.yaml"


SCHEMA_PATH = os.path.join(workflow.current_basedir, "..", "schemas", "config.schema.yaml")


def _check_keys(given, allowed, where):
    """Refuse keys the schema does not know, naming the nearest known one (a typo would otherwise be ignored)."""
    for key in given:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(allowed)}"
            raise PertcalInputError(f"config {where}: unknown key {key!r}; {hint} (fix it in config.yaml or --config)")


def _check_config_keys(cfg, schema):
    """The top level, `processing` and every dataset entry (with its `processing` and `source`) against the schema."""
    _check_keys(cfg, schema["properties"], "top level")
    defs = schema["$defs"]
    _check_keys(cfg.get("processing") or {}, defs["processing"]["properties"], "'processing'")
    for name, entry in (cfg.get("datasets") or {}).items():
        if isinstance(entry, dict):
            _check_keys(entry, defs["dataset"]["properties"], f"dataset {name!r}")
            source = defs["dataset"]["properties"]["source"]
            for field, keys in (("processing", defs["processing"]), ("source", source)):
                _check_keys(entry.get(field) or {}, keys["properties"], f"dataset {name!r} {field!r}")


def _check_harmonizers(datasets):
    """Bind each harmonizer's arguments to its function and compile its regex now, before any job reads data."""
    for name, entry in datasets.items():
        for i, step in enumerate(entry.get("harmonizers", [])):
            where = f"dataset {name!r}, field harmonizers[{i}] (harmonizer {step['name']!r})"
            signature = inspect.signature(HARMONIZERS[step["name"]])
            args = {k: v for k, v in step.items() if k != "name"}
            params = [p for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY]
            required = ", ".join(p.name for p in params if p.default is p.empty) or "none"
            _check_keys(args, [p.name for p in params], f"{where}, argument")
            try:
                # harmonizers are called as fn(labels, obs, **arguments from config)
                signature.bind(None, None, **args)
            except TypeError as err:
                raise PertcalInputError(
                    f"config {where}: {err}; its arguments are {', '.join(p.name for p in params)} "
                    f"(required: {required})"
                ) from None
            if "pattern" in args:
                try:
                    re.compile(args["pattern"])
                except (re.error, TypeError) as err:
                    raise PertcalInputError(
                        f"config {where}: argument 'pattern' {args['pattern']!r} is not a valid regular expression "
                        f"({err}); fix it in config.yaml"
                    ) from None


with open(SCHEMA_PATH) as fh:
    _check_config_keys(config, yaml.safe_load(fh))
validate(config, "../schemas/config.schema.yaml")
_check_harmonizers(config["datasets"])

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
for _name, _spec in MODELS.items():
    for _panel in _spec.get("panels", []):
        if _panel not in config["panels"]:
            raise PertcalInputError(
                f"config 'models': {_name!r} field panels names {_panel!r}, which is not a panel "
                f"({', '.join(sorted(config['panels']))})"
            )
EMBEDDINGS = config.get("embeddings") or {}
RESOURCES = config.get("resources") or {}
LOCK_FILE = "resources.lock.yaml"


def dataset_cfg(dataset):
    """The dataset's config with defaults filled in (processing = global defaults + overrides)."""
    cfg = {**copy.deepcopy(DATASET_DEFAULTS), **copy.deepcopy(config["datasets"][dataset])}
    cfg["processing"] = {**config["processing"], **cfg.get("processing", {})}
    return cfg


def rest_includes_controls(wildcards):
    """Whether this half's DEG test keeps the control cells in the rest: the td half of a dataset whose recipe says so
    (processing.td_rest_includes_controls). A param, so toggling it reruns only the td test and what reads it."""
    return wildcards.half == "td" and dataset_cfg(wildcards.dataset)["processing"]["td_rest_includes_controls"]


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


def runs_on(method, dataset):
    """Whether a model trains on a dataset: every dataset, or only those of the model's `panels`."""
    panels = MODELS[method].get("panels")
    return panels is None or any(dataset in config["panels"].get(p, []) for p in panels)


def models_of(dataset, task):
    return [
        m for m, spec in MODELS.items() if task in spec.get("tasks", ["single", "combo"]) and runs_on(m, dataset)
    ]


def methods_of(dataset, task):
    return baselines_of(task) + models_of(dataset, task)


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


# What bounds each stage's memory (pertcal.memory); every other rule holds a few copies of its P × G inputs.
MEMORY_KIND = {
    "preprocess_dataset": "chunk",
    "reduce_cells": "reduce",
    "select_hvgs": "chunk",
    # a chunk of cells or a block of nonzeros, plus the (perturbation × genes) rank sums and their z, p, BH p
    "test_degs_wilcoxon": "reduce",
    "split_halves": "obs",
    "assign_folds": "obs",
    "summarize_dataset": "obs",
    "simulate_gene2go": "obs",
}


def memory_mb(rule_name):
    """mem_mb of a rule as a function of its job (chunk budget, or its inputs' size) and the retry attempt."""
    kind = MEMORY_KIND.get(rule_name, "tables")

    def estimate(wildcards, input, attempt):
        # a reduce job's sums are sized by what preprocessing kept (its qc.json input)
        qc = read_qc(input.qc) if kind == "reduce" else {}
        mb = job_memory_mb(
            kind,
            chunk_nonzeros=dataset_cfg(wildcards.dataset)["processing"]["chunk_nonzeros"] if kind != "tables" else 0,
            input_mb=table_inputs_mb(input) if kind == "chunk_tables" else input.size_mb,
            perturbations=qc.get("perturbations", 0) + 1,
            genes=qc.get("genes", 0),
            attempt=attempt,
        )
        budget = local_memory_budget()
        # Snakemake would shrink the request to the budget and run the job anyway: refuse instead
        if budget is not None and mb > budget:
            raise WorkflowError(
                f"rule {rule_name} ({', '.join(f'{k}={v}' for k, v in wildcards.items())}) needs mem_mb={mb} but "
                f"this run's memory budget is mem_mb={budget}: lower processing.chunk_nonzeros, give more with "
                "--resources mem_mb=…, or run on a cluster (--profile slurm)"
            )
        return mb

    return estimate


def table_inputs_mb(input):
    """Size (MB) of a job's inputs other than the cells it streams (its `adata` input)."""
    cells = {input.adata} if hasattr(input, "adata") else set()
    return sum(os.path.getsize(f) for f in input if f not in cells and os.path.exists(f)) / 2**20


def read_qc(path):
    """A qc.json's counts, or {} where it is not written yet (dry runs, --touch)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def local_memory_budget():
    """The memory (MB) a local run may hand out, or None on a cluster."""
    if not workflow.local_exec:
        return None
    budget = workflow.global_resources.get("mem_mb")
    return getattr(budget, "value", budget)


def config_resources(rule_name):
    """A rule's cluster resources set in config: the defaults, then the rule's overrides."""
    res = config.get("cluster_resources", {})
    return {**res.get("default", {}), **res.get("rules", {}).get(rule_name, {})}


def rule_resources(rule_name):
    """Resources for a rule: its memory estimate, replaced by any config setting (a fixed mem_mb stops the scaling)."""
    return {"mem_mb": memory_mb(rule_name), **config_resources(rule_name)}


# Run locally, jobs share this machine: make its memory a global resource (unless --resources mem_mb=… sets one),
# so Snakemake never starts jobs whose declared memory does not fit together. On a cluster each job asks for its own.
if workflow.local_exec and "mem_mb" not in workflow.global_resources:
    workflow.global_resources["mem_mb"] = machine_memory_mb()


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


def source_fingerprint(wildcards):
    """What the dataset's raw data is, cheaply (tracked as a params entry of every per-dataset rule).

    A changed source (a local file's size or mtime, a URL, a checksum, the simulator's parameters) then reruns the
    whole chain of the dataset, and after a failed preprocessing the next run fails again instead of reporting the
    outputs of the old data: Snakemake skips a missing intermediate file when the outputs after it look current.
    """
    source = dict(dataset_cfg(wildcards.dataset)["source"])
    if "path" in source:
        try:
            st = os.stat(source["path"])
        except FileNotFoundError:
            return {**source, "missing": True}  # the job's missing input then stops the run with Snakemake's message
        source.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)
    return source


def verified_source(wildcards):
    """A local source with a declared sha256 is read only once its checksum is verified."""
    source = dataset_cfg(wildcards.dataset)["source"]
    return f"resources/{wildcards.dataset}/source.sha256" if "path" in source and "sha256" in source else []


def preprocess_params(wildcards):
    """The harmonizer settings of a dataset (tracked as params: editing them reruns its preprocessing)."""
    cfg = dataset_cfg(wildcards.dataset)
    keys = ("perturbation_column", "control_labels", "combo_delimiter", "gene_symbol_column", "harmonizers")
    return {k: cfg[k] for k in keys}


def metric_tables(wildcards=None, datasets=None, methods=None):
    """Per-(dataset, task, fold, method) metric files of the run (or of the given datasets/methods)."""
    return fold_outputs("results/{dataset}/metrics/{task}/fold{fold}/{method}.parquet", datasets, methods)


CONTROL_METHODS = ["control", "mean", "technical_duplicate", "interpolated_duplicate"]


def gene_space_files(wildcards):
    """The dataset's control HVGs and PC loadings, read by scoring only when the gene_spaces panel is scored (so the
    default DAG does not make them)."""
    if "gene_spaces" not in config["metrics"]:
        return {}
    return {"hvgs": f"results/{wildcards.dataset}/hvgs.parquet", "pcs": f"results/{wildcards.dataset}/pcs.h5ad"}


def folds_files(wildcards):
    """The dataset's folds file per task, keyed by task."""
    return {task: f"results/{wildcards.dataset}/folds_{task}.parquet" for task in tasks_of(wildcards.dataset)}


def simulated_truth(wildcards):
    """Ground-truth tables of the run's simulated datasets, by dataset."""
    return {ds: f"resources/simulated/{ds}/truth.parquet" for ds in DATASETS if is_simulated(ds)}


def embedding_files(source):
    """{role: landing path} of the resources an embedding source reads."""
    return {role: landing_path(name) for role, name in EMBEDDINGS[source]["files"].items()}


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


def embedding_tables(wildcards):
    """{source: embedding table} read by the dataset's models (`embedding_file`): the coverage the summary reports.
    A table of resources/embeddings/ is named by its source, any other by its file name."""
    out, ds = {}, wildcards.dataset
    for method, spec in MODELS.items():
        if not runs_on(method, ds):
            continue
        path = model_jobs.job_params(spec, seed=config["seed"], dataset=ds, simulated=is_simulated(ds)).get("embedding_file")
        if path:
            out[re.sub(r"\W", "_", Path(path).name.split(".")[0])] = path
    return out


def model_input_files(params):
    """The files a model job reads: its file parameters, a directory below resources/external/ (e.g. scGPT's
    checkpoint_dir) replaced by the configured resources inside it, so fetch_resource makes them before the job."""
    out = []
    for path in model_jobs.input_files(params):
        inside = [landing_path(name) for name in sorted(RESOURCES) if Path(path) in Path(landing_path(name)).parents]
        out += inside or [path]
    return out


def run_resources():
    """Resource names the run's jobs read: model files below resources/external/, and the files of the embedding
    sources whose tables a model of the run reads (resources/embeddings/{source}.parquet)."""
    names = set()
    for method, spec in MODELS.items():
        for ds in DATASETS:
            if not runs_on(method, ds):
                continue
            params = model_jobs.job_params(spec, seed=config["seed"], dataset=ds, simulated=is_simulated(ds))
            for path in model_input_files(params):
                # a table of resources/embeddings/ that no configured source makes is the user's own file
                m = re.fullmatch(r"resources/embeddings/(\w+)\.parquet", path)
                if m and m.group(1) in EMBEDDINGS:
                    names.update(EMBEDDINGS[m.group(1)]["files"].values())
                elif path.startswith(f"{LANDING_DIR}/"):
                    names.add(path.removeprefix(f"{LANDING_DIR}/"))
    return sorted(names)

def gene_set_library(wildcards):
    """The dataset's regulator target sets: the simulator's truth for simulated data, else the configured library."""
    if is_simulated(wildcards.dataset):
        return f"resources/simulated/{wildcards.dataset}/gene_sets.gmt"
    return config["analyses"]["gsea"]["gene_sets"]


def gsea_folds(dataset):
    """(task, fold) of every fold of the dataset: its test perturbations are the ones ranked."""
    return [(task, fold) for task in tasks_of(dataset) for fold in folds_of(dataset, task)]


def gsea_runs(dataset):
    """(task, fold, method) of every prediction ranked by its Δ against control (the control's own Δ is 0)."""
    return [
        (task, fold, method)
        for task, fold in gsea_folds(dataset)
        for method in methods_of(dataset, task)
        if method != "control" and fold in method_folds(dataset, task, method)
    ]


wildcard_constraints:
    # only configured names: keeps results/calibration/… and results/stats/… from matching {dataset}
    dataset="|".join(sorted(config["datasets"])),
    task="single|combo",
    fold="[0-9]+",
    half="gt|td",
