"""envs/*.yaml: each conda env file parses, pins every package exactly, and agrees with pyproject.toml's pins
(conda channels cannot be reached here, so agreement with the project's pins is what can be checked)."""

import os
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

from pertcal.containers import GROUP_OMITS, conda_env_pins, group_pins

ROOT = Path(__file__).resolve().parents[2]
GROUPS = sorted(GROUP_OMITS)
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _pyproject_pins():
    """pyproject's exact pins read by plain string splitting (independent of pertcal.containers)."""
    return {name.lower(): version for name, version in (r.split("==") for r in PROJECT["dependencies"])}


def test_every_rule_group_has_an_env_file():
    assert sorted(p.stem for p in (ROOT / "envs").glob("*.yaml")) == GROUPS == ["embed", "gears", "models", "pertcal"]


@pytest.mark.parametrize("group", GROUPS)
def test_env_file_parses_and_pins_everything(group):
    env = yaml.safe_load((ROOT / "envs" / f"{group}.yaml").read_text())
    assert env["channels"][0] == "conda-forge" and "nodefaults" in env["channels"]
    pins, bad = conda_env_pins(ROOT / "envs" / f"{group}.yaml")
    assert bad == []
    assert pins["python"] in SpecifierSet(PROJECT["requires-python"])


GEARS = {"cell-gears", "torch-geometric"}
EMBED = {"transformers"}


# pygments only renders the head process's --report; torch, GEARS and transformers stay out of the envs that never
# import them
@pytest.mark.parametrize(
    "group, omitted",
    [
        ("pertcal", {"torch", "pygments"} | GEARS | EMBED),
        ("models", {"pygments"} | GEARS | EMBED),
        ("gears", {"pygments"} | EMBED),
        ("embed", {"pygments"} | GEARS),
    ],
)
def test_env_pins_agree_with_pyproject(group, omitted):
    pins, _ = conda_env_pins(ROOT / "envs" / f"{group}.yaml")
    expected = {k: v for k, v in _pyproject_pins().items() if k not in omitted}
    tooling = {"python", "pip", "setuptools"}
    assert {k: v for k, v in pins.items() if k not in tooling} == expected
    assert group_pins(ROOT / "pyproject.toml", group) == expected


def test_conda_env_pins_maps_names_and_flags_loose_specs(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(
        "channels: [conda-forge]\ndependencies:\n  - python==3.11.11\n  - matplotlib-base==3.11.2\n"
        "  - bioconda::snakemake-minimal==9.27.1\n  - numpy=2.4\n  - scipy\n"
        "  - pip:\n      - Torch_Geometric==2.8.1\n      - cell-gears>=0.1\n"
    )
    pins, bad = conda_env_pins(path)
    assert pins == {"python": "3.11.11", "matplotlib": "3.11.2", "snakemake": "9.27.1", "torch-geometric": "2.8.1"}
    assert bad == ["numpy=2.4", "scipy", "cell-gears>=0.1"]


@pytest.mark.parametrize("group", GROUPS)
def test_post_deploy_script_refuses_a_directory_without_the_source(group, tmp_path):
    """Snakemake runs envs/<group>.post-deploy.sh after creating the env; outside the repo it must fail clearly."""
    script = ROOT / "envs" / f"{group}.post-deploy.sh"
    assert script.read_text().startswith("#!/usr/bin/env bash")
    res = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env={**os.environ, "PERTCAL_SOURCE": str(tmp_path)},
        capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 1 and "PERTCAL_SOURCE" in res.stderr
