"""Shared workflow-test fixtures: a copy of the repository's workflow in a temporary directory, run by Snakemake."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# What a checkout needs to run the workflow; results/, resources/ and .snakemake/ stay behind.
# `slurm` is the top-level link to profiles/slurm that `--profile slurm` finds.
WORKFLOW_FILES = (
    "Snakefile", "config.yaml", "resources.lock.yaml", "rules", "scripts", "schemas", "profiles", "slurm", "envs", "report",
    "containers",
)


class Workflow:
    """The repository's workflow copied into `path`; Snakemake runs there as a user would run it from a checkout."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        for name in WORKFLOW_FILES:
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, self.path / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, self.path / name)
        self._overlays = 0

    def replace_config(self, **keys) -> None:
        """Replace top-level keys of the copy's config.yaml (a `config=` overlay merges mappings key by key, so
        e.g. `models: {}` there removes nothing)."""
        path = self.path / "config.yaml"
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **keys}, sort_keys=False))

    def copy_results_of(self, other: Workflow) -> Workflow:
        """Take `other`'s results, resources and Snakemake metadata: a run to modify without recomputing it."""
        for name in ("results", "resources", ".snakemake"):
            shutil.copytree(other.path / name, self.path / name, symlinks=True)
        return self

    def command(self, *args: str, config: dict | None = None) -> list[str]:
        """The snakemake command line; `config` (nested keys allowed) is merged over config.yaml."""
        cmd = [sys.executable, "-m", "snakemake", *args]
        if config:
            self._overlays += 1
            overlay = self.path / f".test-config-{self._overlays}.yaml"
            overlay.write_text(yaml.safe_dump(config, sort_keys=False))
            cmd += ["--configfile", str(overlay)]
        return cmd

    def run(self, *args: str, config: dict | None = None, env=None, timeout: float = 1200, check: bool = True):
        """Run Snakemake to completion; on failure the assertion shows the tail of its output."""
        result = subprocess.run(
            self.command(*args, config=config), cwd=self.path, env=env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-6000:]}")
        return result

    def popen(self, *args: str, config: dict | None = None, env=None, log_name: str = "snakemake.stderr"):
        """Start Snakemake in the background, stdout and stderr into `path/log_name`; returns (process, log path)."""
        log = self.path / log_name
        with open(log, "w") as fh:
            proc = subprocess.Popen(
                self.command(*args, config=config), cwd=self.path, env=env, stdout=fh, stderr=subprocess.STDOUT
            )
        return proc, log

    def summary(self, *args: str, config: dict | None = None) -> dict[str, dict[str, str]]:
        """Snakemake's --summary as {output file: row}; row keys include rule, status and plan."""
        out = self.run("--summary", *args, config=config).stdout
        lines = [line.split("\t") for line in out.splitlines() if "\t" in line]
        header, rows = lines[0], lines[1:]
        return {row[0]: dict(zip(header, row)) for row in rows}


@pytest.fixture
def make_workflow(tmp_path):
    """Factory: make_workflow(name) copies the workflow into tmp_path/name."""
    return lambda name="workflow": Workflow(tmp_path / name)


@pytest.fixture
def workflow(make_workflow) -> Workflow:
    return make_workflow()


# Two small demo datasets (one single task, one combo task, fewer folds, no models): the data, calibration and
# benchmark stages end to end in a couple of minutes. Models have their own workflow tests.
SMALL_DEMO = {"run": ["sim_gwps", "sim_wessels"], "processing": {"n_folds_single": 3}, "stats": {"n_resamples": 1000}}
SMALL_DEMO_TARGETS = (
    "results/benchmark.done", "results/calibration/summary.json", "results/metrics.parquet",
    # the analyses (rules/analyses.smk): `all` builds them, so the README's report needs them
    *[f"results/figures/{n}.{e}" for n in ("drf_vs_quality", "strength_genes", "titration") for e in ("pdf", "png")],
    "results/figures/gsea_self_enrichment.png",
)
SMALL_DEMO_STDERR = "small_demo.stderr"


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> Workflow:
    """One run of SMALL_DEMO to its targets, shared by the tests that read its outputs (and must not change them)."""
    wf = Workflow(tmp_path_factory.mktemp("small_demo") / "workflow")
    wf.replace_config(models={})
    result = wf.run(*SMALL_DEMO_TARGETS, "-c2", config=SMALL_DEMO)
    # kept for tests of what the run printed (script jobs' Python warnings reach Snakemake's stderr, not their logs)
    (wf.path / SMALL_DEMO_STDERR).write_text(result.stderr)
    return wf
