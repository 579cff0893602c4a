"""Apptainer recipes: every containers/*.def parses with spython, pins every pip install to pyproject's versions,
and converts to a Dockerfile; pertcal.containers rejects unpinned installs and builds through `apptainer build`."""

import os
import re
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from pertcal.containers import (
    build_image,
    check_recipe,
    conda_env_pins,
    parse_recipe,
    pins,
    pip_requirements,
    recipe_labels,
    recipe_sources,
    to_dockerfile,
    unpinned,
)
from pertcal.io import PertcalInputError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.stem for p in (ROOT / "containers").glob("*.def"))
# pertcal.def holds the CPU core stages, embed.def the GPU gene-embedding rule (scripts run with python, not a model)
GPU_MODELS = [name for name in RECIPES if name not in ("pertcal", "embed")]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
# Every instruction a Dockerfile line may start with (continuation lines excepted).
DOCKER_INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR",
    "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip


def recipe_path(name):
    return ROOT / "containers" / f"{name}.def"


def write_def(tmp_path, post, name="bad.def", extra=""):
    """A minimal, otherwise valid recipe whose %post is `post`."""
    path = tmp_path / name
    path.write_text(
        "Bootstrap: docker\nFrom: python:3.11.11-slim-bookworm\n\n%help\n    test recipe\n%labels\n    a b\n"
        "%files\n    pyproject.toml /opt/x/pyproject.toml\n%environment\n    export A=1\n"
        f"%post\n    {post}\n%runscript\n    exec python \"$@\"\n%test\n    python -V\n{extra}"
    )
    return path


def test_every_shipped_model_has_a_recipe():
    assert {"fmlp", "linear_additive", "latent_additive", "decoder_only", "gears", "scgpt", "sclambda", "presage",
            "pertcal", "embed"} <= set(RECIPES)


def test_embedding_recipe_is_a_cuda_image_that_runs_python_offline():
    recipe = parse_recipe(recipe_path("embed"))
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d\d\.04", recipe.fromHeader)
    assert recipe.cmd == 'exec python "$@"'
    assert recipe_labels(recipe)["pertcal.gpu"] == "true"
    assert "transformers==5.23.0" in pip_requirements(recipe)
    assert {"HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1"} <= set(" ".join(recipe.environ).replace("export ", "").split())


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_parses_and_every_pip_install_is_pinned(name):
    recipe = check_recipe(recipe_path(name))
    reqs = pip_requirements(recipe)
    assert reqs and unpinned(reqs) == []
    # this package goes in as the wheel of exactly pyproject's version, built from the copied source tree
    assert f"/opt/pertcal/dist/pertcal-{VERSION}-py3-none-any.whl" in reqs
    assert recipe_labels(recipe)["org.opencontainers.image.version"] == VERSION
    # rules/containers.smk rebuilds an image when these change: recipes copy in nothing else
    assert set(recipe_sources(recipe)) <= {"pyproject.toml", "README.md", "pertcal"}
    for src in recipe_sources(recipe):
        assert (ROOT / src).exists(), f"{name}.def copies {src}, which is not in the repository"


@pytest.mark.parametrize("name", GPU_MODELS)
def test_model_recipes_use_a_cuda_base_and_the_model_entry_point(name):
    recipe = parse_recipe(recipe_path(name))
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d\d\.04", recipe.fromHeader)
    assert recipe.cmd == 'exec pertcal-model "$@"'
    labels = recipe_labels(recipe)
    assert labels["pertcal.model"] == name and labels["pertcal.gpu"] == "true"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_pins_equal_its_conda_env_pins(name):
    """The image and the conda env it names in its labels install the same versions (python aside)."""
    recipe = check_recipe(recipe_path(name))
    env_pins, env_bad = conda_env_pins(ROOT / recipe_labels(recipe)["pertcal.conda_env"])
    assert env_bad == []
    env_pins.pop("python")
    assert pins(pip_requirements(recipe)) == env_pins


def test_pip_requirements_reads_continuations_chains_and_options(tmp_path):
    post = (
        "apt-get update && apt-get install -y python3-pip && /opt/venv/bin/pip install --no-cache-dir \\\n"
        "        numpy==2.4.6 'scipy==1.17.1' \\\n"
        "        --wheel-dir /w ./src && python -m pip wheel -w /dist /opt/src; pip3 --quiet install torch==2.13.0\n"
        "    pip list"
    )
    recipe = parse_recipe(write_def(tmp_path, post))
    assert pip_requirements(recipe) == ["numpy==2.4.6", "scipy==1.17.1", "./src", "/opt/src", "torch==2.13.0"]


@pytest.mark.parametrize(
    "post, culprit",
    [
        ("pip install torch", "torch"),
        ("pip install --no-cache-dir torch==2.13.0 numpy", "numpy"),
        ("python3 -m pip install 'torch>=2.0'", "torch>=2.0"),
        ("/opt/venv/bin/pip install scanpy==1.*", "scanpy==1.*"),
        ("pip install -r requirements.txt", "-r"),
        ("pip install 'torch==2.13.0,<3' > /tmp/pip.log", "torch==2.13.0,<3"),
    ],
)
def test_unpinned_pip_install_is_rejected(tmp_path, post, culprit):
    with pytest.raises(PertcalInputError, match=re.escape(culprit)) as err:
        check_recipe(write_def(tmp_path, post))
    assert "bad.def" in str(err.value) and "%post" in str(err.value)


@pytest.mark.parametrize(
    "text, field",
    [
        ("Bootstrap: library\nFrom: ubuntu:22.04\n%post\n    true\n", "Bootstrap"),
        ("From: ubuntu:22.04\n%post\n    true\n", "Bootstrap"),
        ("Bootstrap: docker\n%post\n    true\n", "From"),
    ],
)
def test_recipe_without_a_docker_base_is_rejected(tmp_path, text, field):
    path = tmp_path / "x.def"
    path.write_text(text)
    with pytest.raises(PertcalInputError, match=field):
        parse_recipe(path)


def test_recipe_missing_a_section_or_hiding_a_from_line_is_rejected(tmp_path):
    path = write_def(tmp_path, "true")
    path.write_text(path.read_text().replace("%test\n    python -V\n", ""))
    with pytest.raises(PertcalInputError, match="%test"):
        parse_recipe(path)
    # spython would take this help line as the base image
    with pytest.raises(PertcalInputError, match="From"):
        parse_recipe(write_def(tmp_path, "true", extra="%help\n    copies data from: the host\n"))


@pytest.mark.parametrize("name", RECIPES)
def test_dockerfile_conversion(name):
    recipe = check_recipe(recipe_path(name))
    text = to_dockerfile(recipe_path(name))
    lines = text.splitlines()
    body = [ln for ln in lines if not ln.startswith("#")]
    assert body[0] == f"FROM {recipe.fromHeader} AS spython-base"
    for req in pip_requirements(recipe):
        assert req in text
    assert any(ln.startswith("RUN ") and "pip install" in ln for ln in body)
    assert f'LABEL org.opencontainers.image.version="{VERSION}"' in lines
    assert "ENV PYTHONNOUSERSITE=1" in lines
    assert "RUN /bin/bash /tests.sh" in lines
    assert not any(ln.startswith("HEALTHCHECK") for ln in body)
    entry = '["pertcal-model"]' if name in GPU_MODELS else '["python"]'
    assert lines[-1] == f"ENTRYPOINT {entry}"
    # each line is an instruction or the continuation of the previous one (spython drops keywords in some cases)
    for prev, line in zip(body, body[1:]):
        assert prev.endswith("\\") or line.split(" ", 1)[0] in DOCKER_INSTRUCTIONS, line


def _apptainer_standin(bin_dir: Path, record: Path):
    """A stand-in `apptainer` (not Apptainer): records argv and cwd, writes the image file `build` names."""
    script = bin_dir / "apptainer"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"open({str(record)!r}, 'w').write(json.dumps({{'argv': sys.argv[1:], 'cwd': os.getcwd()}}))\n"
        "if sys.argv[1] == 'build':\n"
        "    open(sys.argv[-2], 'w').write('SIF stand-in')\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_build_image_runs_apptainer_build_from_the_context(tmp_path, monkeypatch):
    import json

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.json"
    _apptainer_standin(bin_dir, record)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    image = tmp_path / "out" / "fmlp.sif"
    build_image(recipe_path("fmlp"), image, context=ROOT, log=tmp_path / "build.log")
    seen = json.loads(record.read_text())
    assert seen["cwd"] == str(ROOT)
    assert seen["argv"][:2] == ["build", "--force"] and seen["argv"][-1] == str(recipe_path("fmlp"))
    assert image.read_text() == "SIF stand-in"
    assert sorted(p.name for p in image.parent.iterdir()) == ["fmlp.sif"]


def test_build_image_without_apptainer_fails_clearly_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    image = tmp_path / "fmlp.sif"
    with pytest.raises(PertcalInputError, match="apptainer"):
        build_image(recipe_path("fmlp"), image, context=ROOT)
    assert not image.exists()
