"""A run prints no warning that pertcal's own code causes: the FutureWarning, DeprecationWarning and UserWarning lines
Python prints (`file:line: Category: message`) in Snakemake's stderr and in every job log never name a file under
pertcal/ or scripts/ (a script job runs as .snakemake/scripts/tmp….<rule>.py). Warnings from inside third-party
packages about their own internals are theirs, not ours, and are not counted."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import SMALL_DEMO_STDERR

pytestmark = pytest.mark.workflow

WARNING = re.compile(r"^\s*(?P<file>\S+\.py):(?P<line>\d+): (?P<category>FutureWarning|DeprecationWarning|UserWarning):"
                     r" (?P<message>.*)$", flags=re.M)  # fmt: skip
OURS = re.compile(r"(^|/)(pertcal|scripts)/")


def own_warnings(text: str) -> list[str]:
    """The warning lines of `text` whose file is pertcal's library or one of its scripts."""
    return [m.group(0).strip() for m in WARNING.finditer(text) if OURS.search(m["file"])]


def run_output(workflow, stderr_name: str) -> str:
    """Snakemake's stderr of the run plus every job log."""
    logs = sorted((workflow.path / "logs").rglob("*.log"))
    return "\n".join([(workflow.path / stderr_name).read_text(), *(p.read_text(errors="replace") for p in logs)])


def test_own_warnings_recognizes_our_files_only():
    text = (
        "/src/pertcal/reduce.py:61: FutureWarning: The default of observed=False is deprecated\n"
        "  n = stats.obs.groupby('perturbation')\n"
        "/w/.snakemake/scripts/tmpab12.predict_baseline.py:9: UserWarning: mine\n"
        "/site-packages/anndata/_core.py:10: FutureWarning: theirs\n"
        "/src/pertcal/plots.py:3: RuntimeWarning: not a category we check\n"
    )
    assert own_warnings(text) == [
        "/src/pertcal/reduce.py:61: FutureWarning: The default of observed=False is deprecated",
        "/w/.snakemake/scripts/tmpab12.predict_baseline.py:9: UserWarning: mine",
    ]


def test_data_and_benchmark_stages_cause_no_warnings(small_demo):
    found = own_warnings(run_output(small_demo, SMALL_DEMO_STDERR))
    assert found == [], "\n".join(sorted(set(found)))


def test_models_cause_no_warnings(make_workflow):
    """Every configured model that runs on the demo trained, predicted and scored on one fold of the smallest combo
    dataset (the foundation-model arm runs on the published panel only: its embeddings describe real genes)."""
    wf = make_workflow()
    config = yaml.safe_load((wf.path / "config.yaml").read_text())
    models = [m for m, spec in config["models"].items()
              if any("sim_wessels" in config["panels"][p] for p in spec.get("panels", ["demo"]))]
    assert {"fmlp", "gears", "scgpt", "sclambda", "presage"} <= set(models) and "fmlp_esm2" not in models
    result = wf.run(*(f"results/sim_wessels/metrics/combo/fold0/{m}.parquet" for m in models), "-c2",
                    config={"run": ["sim_wessels"]})  # fmt: skip
    (wf.path / "run.stderr").write_text(result.stderr)
    found = own_warnings(run_output(wf, "run.stderr"))
    assert found == [], "\n".join(sorted(set(found)))
