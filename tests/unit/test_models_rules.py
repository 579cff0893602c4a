"""rules/models.smk, dry-run: the jobs Snakemake plans for models (command, inputs, resources) on the demo config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pertcal.models import jobs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workdir(tmp_path):
    """The repository's workflow, copied (results and resources stay behind)."""
    for name in ("Snakefile", "config.yaml", "rules", "scripts", "schemas", "envs", "profiles", "report", "containers"):
        src = REPO / name
        if src.exists():
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    return tmp_path


def _dry_run(workdir, *targets, config=None):
    cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "-c4", *targets]
    if config:
        (workdir / "overlay.yaml").write_text(yaml.safe_dump(config))
        cmd += ["--configfile", "overlay.yaml"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)


def _jobs(stdout: str) -> dict[tuple[str, str], str]:
    """{(rule, output): the job's block of dry-run text}."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", stdout)
    jobs = {}
    for block in blocks:
        m = re.match(r"(?:local)?rule (\w+):.*?output: ([^\n]+)", block, re.S)
        if m:
            jobs[(m[1], m[2].strip())] = block
    return jobs


def test_model_jobs_call_the_cli_with_resolved_params_inputs_and_resources(workdir):
    pred = "results/sim_gwps/predictions/single/fold0/{}.h5ad"
    result = _dry_run(workdir, pred.format("gears"), pred.format("fmlp"), pred.format("mean"))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = _jobs(result.stdout)
    assert ("predict_baseline", pred.format("mean")) in jobs
    gears = jobs[("train_model", "results/sim_gwps/models/single/fold0/gears")]
    # simulated dataset: the demo's short training and the random GO map made for this dataset, as an input
    assert "resources/simulated/sim_gwps/gene2go.pkl" in gears.split("output:")[0]
    assert '"gene2go_path": "resources/simulated/sim_gwps/gene2go.pkl"' in gears and '"epochs": 1' in gears
    assert "pertcal-model train --model gears --name gears" in gears
    assert re.search(r"resources: .*gpu=1.*slurm_partition=gpu.*mem_mb=16000", gears.replace(",", " ,"))
    fmlp = jobs[("train_model", "results/sim_gwps/models/single/fold0/fmlp")]
    assert '"epochs": 20' in fmlp and '"seed": 42' in fmlp and '"embedding": "pca"' in fmlp
    predict = jobs[("predict_model", pred.format("fmlp"))]
    assert "pertcal-model predict --checkpoint results/sim_gwps/models/single/fold0/fmlp" in predict
    assert ("simulate_gene2go", "resources/simulated/sim_gwps/gene2go.pkl") in jobs


def test_a_model_named_like_a_baseline_is_refused(workdir):
    result = _dry_run(workdir, "results/sim_gwps/folds_single.parquet", config={"models": {"mean": {"model": "fmlp"}}})
    assert result.returncode != 0 and "'mean' is also a baseline name" in result.stdout + result.stderr


def test_job_params_overlay_seed_params_and_simulated_params():
    spec = {"params": {"epochs": 100, "gene2go_path": "go/{dataset}.pkl", "note": "{dataset}"},
            "simulated_params": {"epochs": 20, "seed": 7}}
    real = jobs.job_params(spec, seed=42, dataset="adamson16", simulated=False)
    assert real == {"seed": 42, "epochs": 100, "gene2go_path": "go/adamson16.pkl", "note": "{dataset}"}
    sim = jobs.job_params(spec, seed=42, dataset="sim_a", simulated=True)
    assert (sim["epochs"], sim["seed"], sim["gene2go_path"]) == (20, 7, "go/sim_a.pkl")
    assert jobs.input_files({"embedding_file": None, "gene2go_path": "a.pkl", "epochs": 3}) == ["a.pkl"]
    # a checkpoint directory and a list of tables are inputs too, "{dataset}" replaced in each
    listed = jobs.job_params({"params": {"embedding_files": ["x/{dataset}.tsv", "y.tsv"], "checkpoint_dir": "ck",
                                         "embeddings": ["{dataset}"]}}, seed=1, dataset="d", simulated=False)
    assert listed["embedding_files"] == ["x/d.tsv", "y.tsv"] and listed["embeddings"] == ["{dataset}"]
    assert jobs.input_files(listed) == ["ck", "x/d.tsv", "y.tsv"]
    assert jobs.input_files({"checkpoint_dir": None, "embedding_files": []}) == []


def test_resources_come_from_the_model_then_the_rule_then_fallbacks_and_memory_grows_per_attempt():
    specs = {"a": {"resources": {"mem_mb": 8000, "gpu": 1, "slurm_partition": "gpu"}}, "b": {}}
    rule = {"runtime": 30}
    assert jobs.resource_keys(specs, rule) == ["cpus_per_task", "gpu", "mem_mb", "runtime", "slurm_partition"]
    assert [jobs.resource(specs["a"], "mem_mb", rule, attempt) for attempt in (1, 2, 3)] == [8000, 16000, 24000]
    assert jobs.resource(specs["a"], "runtime", rule) == 30 and jobs.resource(specs["b"], "gpu", rule) == 0
    assert jobs.resource(specs["b"], "mem_mb", rule, attempt=2) == 8000
    assert jobs.resource(specs["b"], "slurm_partition", rule) == ""


def test_simulated_resources_and_folds_replace_the_models_own_on_simulated_data_only():
    spec = {"resources": {"cpus_per_task": 4, "gpu": 1}, "simulated_resources": {"cpus_per_task": 1},
            "simulated_folds": 2}
    assert "qos" in jobs.resource_keys({"a": {"simulated_resources": {"qos": "short"}}}, {})
    assert [jobs.resource(spec, "cpus_per_task", {}, simulated=s) for s in (False, True)] == [4, 1]
    assert jobs.resource(spec, "gpu", {}, simulated=True) == 1
    assert jobs.folds(spec, [0, 1, 2, 3, 4], simulated=True) == [0, 1]
    assert jobs.folds(spec, [0, 1, 2, 3, 4], simulated=False) == jobs.folds({}, [0, 1, 2, 3, 4], simulated=True)


def test_demo_models_run_on_one_fold_of_a_simulated_dataset_with_one_thread(workdir):
    """The full demo plans every baseline on every fold, and the models on their `simulated_folds` first fold only,
    each on one core."""
    result = _dry_run(workdir, "results/sim_gwps/metrics.parquet")
    assert result.returncode == 0, result.stderr[-3000:]
    planned = _jobs(result.stdout)
    scored = {tuple(out.split("/")[-2:]) for (rule, out) in planned if rule == "score_metrics"}
    assert {f for f, m in scored if m == "mean.parquet"} == {f"fold{k}" for k in range(5)}
    for model in ("gears", "fmlp", "scgpt", "sclambda", "presage"):
        assert {f for f, m in scored if m == f"{model}.parquet"} == {"fold0"}
    trains = [block for (rule, _), block in planned.items() if rule == "train_model"]
    assert len(trains) == 8 and all("--threads 1" in block for block in trains)


def test_a_missing_package_is_found_without_importing_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_geometric", None)  # find_spec then reports it absent
    assert jobs.missing_distributions("gears") == ["torch-geometric"]
    assert jobs.missing_distributions("fmlp") == []
