"""The SLURM path end to end: `--profile profiles/slurm` on a real one-node cluster (a killed job is retried, outputs
equal a local run's), partial-rerun plans after a config change, and the published panel's plan with grouped jobs."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

import slurm_cluster

REPO = Path(__file__).resolve().parents[2]

# The smallest demo dataset (one combo task, two folds), the negative and the positive control: every stage up to the
# combined metrics table, 2 x 2 prediction + scoring pieces in one group job.
SMALL = {"run": ["sim_wessels"], "baselines": ["mean", "interpolated_duplicate"]}
TARGET = "results/metrics.parquet"
# Its memory comes from the profile's default-resources, so the retry must ask for twice as much.
KILLED_RULE = "simulate_dataset"
# Test-only speed-ups on top of the profile: the executor's first status check after 2 s instead of 40 s,
# every job's SLURM log kept so the test can find all job ids on disk.
SLURM_ARGS = (
    "--profile",
    "profiles/slurm",
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--slurm-keep-successful-logs",
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = slurm_cluster.unavailable_reason()
    if reason:
        pytest.skip(f"cannot run SLURM here: {reason}")
    with slurm_cluster.one_node_cluster(tmp_path_factory.mktemp("slurm")) as c:
        yield c


def squeue(cluster) -> list[dict[str, str]]:
    """Every job the controller remembers (MinJobAge keeps finished ones): id, state, comment, memory."""
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T|%k|%m").stdout
    return [dict(zip(("id", "state", "comment", "mem"), line.split("|"))) for line in out.splitlines() if line]


def running_steps(cluster) -> set[str]:
    """Job ids with a running step, i.e. whose rule is executing (the batch script alone has no step)."""
    out = cluster.run("squeue", "-h", "-s", "-o", "%i").stdout
    return {line.split(".")[0] for line in out.split() if re.fullmatch(r"\d+\.\d+", line)}


def scancel_when_running(cluster, proc, comment_prefix: str, timeout: float = 600) -> str:
    """Wait until a job whose comment starts with `comment_prefix` executes its rule, scancel it, return its id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ids = {j["id"] for j in squeue(cluster) if j["comment"].startswith(comment_prefix) and j["state"] == "RUNNING"}
        hit = sorted(ids & running_steps(cluster))
        if hit:
            cluster.run("scancel", hit[0])
            return hit[0]
        time.sleep(0.3)
    raise AssertionError(f"no running {comment_prefix} job to cancel (snakemake exit: {proc.poll()})")


def assert_same_outputs(local: Path, remote: Path) -> list[str]:
    """Every file under resources/ and results/ equal: bytes, or for h5ad whose bytes differ, every array and table.
    Returns the h5ad files compared by content."""

    def outputs(root):
        files = (p for d in ("resources", "results") for p in (root / d).rglob("*") if p.is_file())
        return sorted(p.relative_to(root) for p in files)

    files = outputs(local)
    assert TARGET in map(str, files), files
    assert files == outputs(remote)
    by_content = []
    for rel in files:
        a, b = (local / rel).read_bytes(), (remote / rel).read_bytes()
        if a == b:
            continue
        assert rel.suffix == ".h5ad", f"{rel} differs between the local and the SLURM run"
        assert_same_anndata(ad.read_h5ad(local / rel), ad.read_h5ad(remote / rel), rel)
        by_content.append(str(rel))
    return by_content


def assert_same_anndata(a: ad.AnnData, b: ad.AnnData, name) -> None:
    assert list(a.obs_names) == list(b.obs_names) and list(a.var_names) == list(b.var_names), name
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
    for key in {None, *a.layers.keys(), *b.layers.keys()}:
        x, y = (a.X, b.X) if key is None else (a.layers[key], b.layers[key])
        assert sp.issparse(x) == sp.issparse(y), (name, key)
        x, y = (x.toarray(), y.toarray()) if sp.issparse(x) else (np.asarray(x), np.asarray(y))
        assert x.dtype == y.dtype and np.array_equal(x, y), (name, key)
    assert repr(a.uns) == repr(b.uns), name


@pytest.mark.slurm
def test_slurm_run_retries_a_killed_job_and_matches_local_run(cluster, make_workflow):
    local, remote = make_workflow("local"), make_workflow("slurm")
    slurm_proc, slurm_log = remote.popen(*SLURM_ARGS, TARGET, config=SMALL, env=cluster.env)
    local_proc, local_log = local.popen(TARGET, config=SMALL)
    try:
        killed = scancel_when_running(cluster, slurm_proc, f"rule_{KILLED_RULE}_wildcards_sim_wessels")
        slurm_rc = slurm_proc.wait(timeout=1200)
        local_rc = local_proc.wait(timeout=1200)
    finally:
        for proc in (slurm_proc, local_proc):
            if proc.poll() is None:
                proc.terminate()  # snakemake scancels its own jobs on SIGTERM
                proc.wait(timeout=120)
    log = slurm_log.read_text()
    assert local_rc == 0, local_log.read_text()[-6000:]
    assert slurm_rc == 0, f"{log[-6000:]}\n{cluster.daemon_logs()}"

    # every non-local job went through sbatch: ids in Snakemake's log, in .snakemake/slurm_logs, and in slurmctld
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    jobs = {j["id"]: j for j in squeue(cluster)}
    on_disk = {p.stem for p in (remote.path / ".snakemake/slurm_logs").rglob("*.log")}
    assert len(submitted) >= 6 and set(submitted) == on_disk == set(jobs), (submitted, on_disk, jobs)

    # the killed job failed as CANCELLED, Snakemake resubmitted it with twice the memory, the retry completed
    assert jobs[killed]["state"] == "CANCELLED"
    assert f"SLURM-job '{killed}' failed, SLURM status is: 'CANCELLED'" in log
    attempts = sorted(
        (j for j in jobs.values() if j["comment"].startswith(f"rule_{KILLED_RULE}_")), key=lambda j: int(j["id"])
    )
    assert [j["state"] for j in attempts] == ["CANCELLED", "COMPLETED"], attempts
    first_mb, retry_mb = (int(j["mem"].removesuffix("M")) for j in attempts)
    assert retry_mb == 2 * first_mb, attempts
    assert all(j["state"] == "COMPLETED" for i, j in jobs.items() if i != killed), jobs

    # the dataset's predictions and scores (4 of each) ran as one grouped sbatch job
    groups = [j for j in jobs.values() if j["comment"].startswith("rule_score_sim_wessels")]
    assert len(groups) == 1, jobs
    for rule in ("predict_baseline", "score_metrics"):
        assert len(re.findall(rf"Finished jobid: \S+ \(Rule: {rule}\)", log)) == 4, rule

    h5ad_by_content = assert_same_outputs(local.path, remote.path)
    print("h5ad equal by arrays and tables, bytes differ:", h5ad_by_content)


def _dataset_of(path: str) -> str | None:
    """The dataset an output belongs to, or None for the run's cross-dataset outputs."""
    m = re.match(r"(?:results|resources(?:/simulated)?)/([a-z0-9_]+)/", path)
    return m.group(1) if m and m.group(1) not in ("calibration", "stats", "simulated") else None


@pytest.mark.workflow
def test_config_change_reruns_only_its_dataset_and_cross_dataset_outputs(workflow):
    """Plans come from Snakemake's --summary after a completed run (outputs stubbed and --touch'ed: plans only
    depend on files, their times and the recorded params/code, not on their contents)."""
    base = {"run": ["sim_wessels", "sim_gwps"]}
    for path in workflow.summary(config=base):
        (workflow.path / path).parent.mkdir(parents=True, exist_ok=True)
        (workflow.path / path).touch()
    workflow.run("--touch", config=base)
    done = workflow.summary(config=base)
    assert {row["plan"] for row in done.values()} == {"no update"}

    def pending(config):
        return {f for f, row in workflow.summary(config=config).items() if row["plan"] != "no update"}

    cross = {f for f in done if _dataset_of(f) is None}
    assert {"results/metrics.parquet", "results/summary.csv", "results/calibration/drf.parquet"} <= cross

    changed = {**base, "datasets": {"sim_wessels": {"processing": {"n_hvg": 700}}}}
    wessels_after_raw = {
        f for f, row in done.items() if _dataset_of(f) == "sim_wessels" and row["rule"] != "simulate_dataset"
    }
    assert "results/sim_wessels/processed.h5ad" in wessels_after_raw
    assert pending(changed) == wessels_after_raw | cross

    added = {"run": [*base["run"], "sim_essential"]}
    plan = workflow.summary(config=added)
    essential = {f for f in plan if _dataset_of(f) == "sim_essential"}
    assert essential and {f for f, row in plan.items() if row["plan"] != "no update"} == essential | cross


@pytest.mark.workflow
def test_published_panel_plans_within_a_minute_with_grouped_scoring(workflow):
    start = time.monotonic()
    result = workflow.run("--profile", "profiles/slurm", "-n", "--config", "run=published")
    elapsed = time.monotonic() - start
    assert elapsed < 60, f"dry-run of the published panel took {elapsed:.0f}s"

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    per_job = profile["group-components"]["score_{dataset}"]
    only = {"linear": "single", "additive": "combo"}
    groups = re.findall(r"Group job score_([a-z0-9_]+) ", result.stdout + result.stderr)
    for name in config["panels"]["published"]:
        ds = config["datasets"][name]
        processing = {**config["processing"], **ds.get("processing", {})}
        pieces = sum(
            processing[f"n_folds_{task}"] * sum(only.get(b, task) == task for b in config["baselines"])
            for task in ds.get("tasks", ["single"])
        )
        # each (task, fold, method) prediction + its scoring is one piece; `per_job` pieces share an sbatch job
        assert groups.count(name) == math.ceil(pieces / per_job), (name, pieces)
