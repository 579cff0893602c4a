"""The workflow passes Snakemake's own linter (the catalogue's standard)."""

import pytest

pytestmark = pytest.mark.workflow


def test_snakemake_lint_is_clean(workflow):
    result = workflow.run("--lint", check=False)
    out = result.stdout + result.stderr
    assert "Lints for" not in out, out[-4000:]
    assert result.returncode == 0, out[-4000:]
