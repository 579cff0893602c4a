"""rules/models.smk, dry-run: the jobs Snakemake plans for models (command, inputs, resources) on the demo config."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# The stages a model job depends on, then the models; baselines too, to show the two prediction rules never clash.
SNAKEFILE = "\n".join(
    f'include: "rules/{name}.smk"'
    for name in ("common", "download", "preprocess", "split", "reduce", "degs", "baselines", "models")
)


@pytest.fixture
def workdir(tmp_path):
    for name in ("config.yaml", "rules", "scripts", "schemas", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, tmp_path / name)
    (tmp_path / "Snakefile").write_text(SNAKEFILE + "\n")
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
