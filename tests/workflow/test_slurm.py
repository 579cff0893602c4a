"""The SLURM path end to end: `--profile profiles/slurm` on a real one-node cluster (a killed job is retried, outputs
equal a local run's), partial-rerun plans after a config change, and the published panel's plan with grouped jobs."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest
import yaml

import slurm_cluster

# The smallest demo dataset (one combo task, two folds), the negative and the positive control, no models (replaced in
# config.yaml: they need GPUs and minutes): every stage up to the combined metrics table, 2 x 2 prediction + scoring
# pieces in one group job.
SMALL = {"run": ["sim_wessels"], "baselines": ["mean", "interpolated_duplicate"]}
TARGET = "results/metrics.parquet"
# Its memory is its rule's estimate (pertcal.memory) times the attempt, so the retry must ask for twice as much.
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
    """Every job the controller remembers (MinJobAge keeps finished ones): id, state, comment, memory, CPUs."""
    out = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%T|%k|%m|%C").stdout
    return [dict(zip(("id", "state", "comment", "mem", "cpus"), line.split("|"))) for line in out.splitlines() if line]


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


def assert_same_outputs(local: Path, remote: Path) -> None:
    """Every file under resources/ and results/ byte-identical (h5ad included: anndata writes no HDF5 timestamps)."""

    def outputs(root):
        files = (p for d in ("resources", "results") for p in (root / d).rglob("*") if p.is_file())
        return sorted(p.relative_to(root) for p in files)

    files = outputs(local)
    assert TARGET in map(str, files), files
    assert files == outputs(remote)
    for rel in files:
        assert (local / rel).read_bytes() == (remote / rel).read_bytes(), f"{rel} differs between local and SLURM run"


@pytest.mark.slurm
def test_slurm_run_retries_a_killed_job_and_matches_local_run(cluster, make_workflow):
    local, remote = make_workflow("local"), make_workflow("slurm")
    for wf in (local, remote):
        wf.replace_config(models={})
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

    # the dataset's predictions and scores (4 of each) ran as one grouped sbatch job, one job's worth of CPUs
    groups = [j for j in jobs.values() if j["comment"].startswith("rule_score_sim_wessels")]
    assert len(groups) == 1 and groups[0]["cpus"] == "1", jobs
    for rule in ("predict_baseline", "score_metrics"):
        assert len(re.findall(rf"Finished jobid: \S+ \(Rule: {rule}\)", log)) == 4, rule

    assert_same_outputs(local.path, remote.path)


# rules whose output is a directory()
DIRECTORY_RULES = {"train_model"}


def _dataset_of(path: str) -> str | None:
    """The dataset an output belongs to, or None for the run's cross-dataset outputs."""
    m = re.match(r"(?:results|resources(?:/simulated)?)/([a-z0-9_]+)/", path)
    # results/stats, tables and figures hold per-dataset files too, but they sit after the cross-dataset collection
    return m.group(1) if m and m.group(1) not in ("calibration", "stats", "simulated", "tables", "figures", "analyses") else None


@pytest.mark.workflow
def test_config_changes_rerun_only_what_depends_on_them(workflow):
    """Plans come from Snakemake's --summary after a completed run (outputs stubbed and --touch'ed: plans only
    depend on files, their times and the recorded params/code, not on their contents)."""
    base = {"run": ["sim_wessels", "sim_gwps"]}
    for path, row in workflow.summary(config=base).items():
        if row["rule"] in DIRECTORY_RULES:
            (workflow.path / path).mkdir(parents=True)
        else:
            (workflow.path / path).parent.mkdir(parents=True, exist_ok=True)
            (workflow.path / path).touch()
    workflow.run("--touch", config=base)
    done = workflow.summary(config=base)
    assert {row["plan"] for row in done.values()} == {"no update"}

    def pending(config):
        return {f for f, row in workflow.summary(config=config).items() if row["plan"] != "no update"}

    cross = {f for f in done if _dataset_of(f) is None}
    collected = {"results/metrics.parquet", "results/summary.csv", "results/calibration/drf.parquet"}
    assert collected <= cross

    def not_of(*datasets):
        """Cross-dataset outputs, less the per-dataset statistics, tables and figures of `datasets`."""
        return {f for f in cross if not any(ds in f for ds in datasets)}

    def assert_plan(pending_files, must, may):
        assert must <= pending_files, sorted(must - pending_files)
        assert pending_files <= must | may, sorted(pending_files - must - may)

    # one dataset's processing parameter: that dataset from preprocessing on, then the cross-dataset outputs
    changed = {**base, "datasets": {"sim_wessels": {"processing": {"n_hvg": 700}}}}
    wessels_after_raw = {
        f for f, row in done.items()
        if _dataset_of(f) == "sim_wessels" and row["rule"] not in ("simulate_dataset", "write_simulated_gene_sets")
    }  # the simulator's outputs (its truth's gene sets included) do not depend on processing
    assert "results/sim_wessels/processed.h5ad" in wessels_after_raw
    assert_plan(pending(changed), wessels_after_raw | collected, not_of("sim_gwps"))

    # one model's hyperparameter: that model's training, predictions and scores, then what combines scores
    config = yaml.safe_load((workflow.path / "config.yaml").read_text())
    assert config["models"], "config.yaml defines no model to change"
    model, spec = next(iter(config["models"].items()))
    epochs = {**spec.get("params", {}), **spec.get("simulated_params", {})}["epochs"]
    tuned = pending({**base, "models": {model: {"simulated_params": {"epochs": epochs + 1}}}})
    of_model = {f for f in done if _dataset_of(f) and Path(f).stem == model}
    per_dataset_tables = {f"results/{ds}/metrics.parquet" for ds in base["run"]}
    assert of_model
    # GSEA ranks every method's predictions, this model's included
    gsea = {f"results/{ds}/gsea_self_enrichment.parquet" for ds in base["run"]}
    assert_plan(tuned, of_model | gsea | {"results/metrics.parquet"}, per_dataset_tables | cross)

    # a dataset added to the run: all of it, then the cross-dataset outputs; nothing of the datasets already done
    plan = workflow.summary(config={"run": [*base["run"], "sim_essential"]})
    essential = {f for f in plan if _dataset_of(f) == "sim_essential"}
    assert essential
    added = {f for f, row in plan.items() if row["plan"] != "no update"}
    of_essential = {f for f in plan if "sim_essential" in f}  # incl. its statistics, tables and figures
    assert_plan(added, essential | collected, not_of("sim_gwps", "sim_wessels") | of_essential)


def planned_per_dataset(dry_run: str, rule: str) -> dict[str, int]:
    """How many jobs of `rule` a dry-run plan holds per dataset (grouped jobs included)."""
    counts, current = {}, None
    for line in dry_run.splitlines():
        if m := re.match(r"\s*(?:local)?rule (\w+):$", line):
            current = m.group(1)
        elif (m := re.match(r"\s*wildcards: .*\bdataset=(\w+)", line)) and current == rule:
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


@pytest.mark.workflow
def test_published_panel_plans_with_grouped_scoring(workflow):
    config = yaml.safe_load((workflow.path / "config.yaml").read_text())
    start = time.monotonic()
    result = workflow.run("--profile", "profiles/slurm", "-n", "--config", "run=published")
    elapsed = time.monotonic() - start
    # a guard against a plan that grows out of proportion, not a speed measurement (about 50 s on an idle machine
    # for ~2,700 jobs; input functions run once per job)
    assert elapsed < 180, f"dry-run of the published panel took {elapsed:.0f}s"

    plan = result.stdout + result.stderr
    per_job = yaml.safe_load((workflow.path / "profiles/slurm/config.yaml").read_text())["group-components"]
    groups = re.findall(r"Group job score_([a-z0-9_]+) ", plan)
    scores = planned_per_dataset(plan, "score_metrics")
    assert set(scores) == set(config["panels"]["published"]), scores
    for dataset, n in scores.items():
        # every score job (with its baseline prediction, if any) is one piece; `per_job` pieces share an sbatch job
        assert groups.count(dataset) == math.ceil(n / per_job["score_{dataset}"]), (dataset, n)

    # the foundation-model arm: every external file the run reads is one fetch_resource job (a local rule: the head
    # process on the login node downloads), and each embedding source is one GPU job
    jobs = planned_jobs(plan)
    fetched = {j["output"] for j in jobs if j["rule"] == "fetch_resource"}
    sources = config["embeddings"]
    needed = {f"resources/external/{name}" for src in sources.values() for name in src["files"].values()}
    # GEARS's GO map and the scGPT checkpoint directory that model `scgpt` fine-tunes are fetched like the rest
    scgpt_dir = {f"resources/external/scgpt_human/{f}" for f in ("best_model.pt", "vocab.json", "args.json")}
    assert needed | scgpt_dir | {"resources/external/gears/gene2go_all.pkl"} <= fetched, sorted(needed - fetched)
    assert "fetch_resource" in localrules(workflow.path / "rules" / "cluster.smk")
    embeds = [j for j in jobs if j["rule"] == "embed_genes"]
    assert sorted(j["output"] for j in embeds) == [f"resources/embeddings/{s}.parquet" for s in sorted(sources)]
    for job in embeds:
        if job["output"].endswith(("esm2.parquet", "geneformer.parquet", "scgpt.parquet")):
            assert "slurm_partition=gpu" in job["resources"] and "gpu=1" in job["resources"], job
    models = {m for m, spec in config["models"].items() if spec.get("panels") == ["published"]}
    assert models == {"fmlp_esm2", "fmlp_geneformer", "fmlp_genept", "fmlp_scgpt"}
    trained = {j["output"].rsplit("/", 1)[-1] for j in jobs if j["rule"] == "train_model"}
    assert models <= trained


def planned_jobs(dry_run: str) -> list[dict[str, str]]:
    """Each job of a dry-run plan as {rule, output, resources} (the lines Snakemake prints under `rule NAME:`)."""
    jobs = []
    for line in dry_run.splitlines():
        if m := re.match(r"\s*(?:local)?rule (\w+):$", line):
            jobs.append({"rule": m.group(1), "output": "", "resources": ""})
        elif jobs and (m := re.match(r"\s*(output|resources): (.*)$", line)):
            jobs[-1][m.group(1)] = m.group(2)
    return jobs


def localrules(path: Path) -> set[str]:
    """The rule names of a `localrules:` directive."""
    text = path.read_text()
    block = text[text.index("localrules:") :].split("\n\n")[0]
    return {name.strip(" ,") for name in block.splitlines()[1:] if name.strip(" ,")}
