"""The README's commands work after the README's install: every `snakemake ...` line of its fenced bash blocks plans
(dry run) on a copy of the workflow, the report command builds a report from a small run, the install is what CI
runs, and a model whose Python package is missing is refused while the DAG is built."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib

import pytest
import yaml
from conftest import REPO, SMALL_DEMO, Workflow

from pertcal.models.jobs import IMPORTS

pytestmark = pytest.mark.workflow


def readme_lines() -> list[str]:
    """The lines of the README's ```bash blocks."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (REPO / "README.md").read_text(), flags=re.M | re.S)
    return "\n".join(blocks).splitlines()


def readme_commands() -> list[list[str]]:
    """Each command of the README's ```bash blocks as argv, comments dropped, `a && b` split into a and b."""
    commands = []
    for line in readme_lines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            commands.append(words[:cut])
            words = words[cut + 1 :]
    return commands


SNAKEMAKE = [c[1:] for c in readme_commands() if c[0] == "snakemake"]
REPORTS = [args for args in SNAKEMAKE if "--report" in args]
PLANS = [args for args in SNAKEMAKE if "--report" not in args]


def test_the_readme_has_the_commands_a_newcomer_needs():
    assert [] in PLANS and ["results/drf_heatmap.pdf"] in PLANS and ["--profile", "slurm", "-n"] in PLANS
    assert REPORTS == [["--report", "results/report.html"]]


def test_the_readme_test_command_is_what_ci_runs():
    words = lambda lines: [w for w in (shlex.split(line, comments=True) for line in lines) if "pytest" in w]
    ci = words((REPO / ".ci" / "run").read_text().splitlines())
    expected = [["python", "-m", "pip", "install", "-e", ".[test]", "&&", "python", "-m", "pytest"]]
    assert ci == words(readme_lines()) == expected
    assert readme_commands()[0] == ["python", "-m", "pip", "install", "-e", "."]


def test_the_readme_install_brings_every_configured_model_and_the_report():
    """`pip install -e .` installs pyproject's base dependencies only; they must hold what the README's runs import."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {r.split("==")[0].lower() for r in project["dependencies"]}
    models = yaml.safe_load((REPO / "config.yaml").read_text())["models"]
    needed = {dist for name, spec in models.items() for dist in IMPORTS[spec.get("model", name)].values()}
    assert needed | {"pygments"} <= base  # pygments: Snakemake's --report


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Workflow:
    """One copy of the workflow for every dry run (they only plan, so they cannot disturb each other); the
    published panel's external files (GEARS's gene2go, the checkpoints) are fetch_resource jobs of the plan."""
    return Workflow(tmp_path_factory.mktemp("readme") / "workflow")


@pytest.mark.parametrize("args", PLANS, ids=shlex.join)
def test_readme_snakemake_command_plans(checkout, args):
    """Dry run: the DAG (with every model's software check) and the profile resolve; jobs are not run here."""
    result = checkout.run(*args, *([] if "-n" in args else ["-n"]), timeout=300)
    assert "Job stats:" in result.stdout + result.stderr or "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.parametrize("args", REPORTS, ids=shlex.join)
def test_readme_report_command_builds_the_report(small_demo, args):
    small_demo.run(*args, config=SMALL_DEMO)
    assert (small_demo.path / "results" / "report.html").stat().st_size > 100_000


# Snakemake parses the Snakefile in this process, so a None in sys.modules makes find_spec("gears") come back empty.
WITHOUT_GEARS = "import sys; sys.modules['gears'] = None; from snakemake.cli import main; main()"


def test_a_model_whose_package_is_missing_is_refused_at_dag_time(checkout):
    def plan(*targets):
        # --config takes every word after it, so the targets come first
        cmd = [sys.executable, "-c", WITHOUT_GEARS, "-n", *targets, "--config", "run=[sim_wessels]"]
        return subprocess.run(cmd, cwd=checkout.path, capture_output=True, text=True, timeout=300)

    refused = plan("results/sim_wessels/predictions/combo/fold0/gears.h5ad")
    message = refused.stdout + refused.stderr  # Snakemake prints the error on stdout
    assert refused.returncode != 0
    assert "'gears' (gears) needs the Python package(s) cell-gears, which are not installed" in message
    assert "run `python -m pip install -e .` from the repository root" in message
    # targets without GEARS still plan, and another model is unaffected
    others = plan("results/sim_wessels/drf.parquet", "results/sim_wessels/predictions/combo/fold0/fmlp.h5ad")
    assert others.returncode == 0, others.stderr[-3000:]
