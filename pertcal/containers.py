"""Software deployment: Apptainer recipes and conda env files — parse, check pins, convert, build."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from pertcal.io import PertcalInputError, atomic_path

REQUIRED_SECTIONS = ("files", "post", "environment", "runscript", "labels", "help", "test")

# pip options that consume the next token (so it is not mistaken for a package).
_PIP_VALUE_OPTIONS = {
    "-w", "--wheel-dir", "-f", "--find-links", "-i", "--index-url", "--extra-index-url", "-c", "--constraint",
    "-t", "--target", "--prefix", "--root", "--src", "--cache-dir", "--platform", "--python-version",
    "--implementation", "--abi", "--progress-bar", "--log", "--timeout", "--retries", "--trusted-host",
    "--upgrade-strategy", "--only-binary", "--no-binary", "--config-settings", "-C", "--global-option",
}
_SHELL_PUNCTUATION = set("();<>|&")  # a token made only of these ends a command (operator or redirection)

# conda-forge/bioconda names that differ from the PyPI names pyproject.toml pins.
CONDA_TO_PYPI = {"matplotlib-base": "matplotlib", "snakemake-minimal": "snakemake", "pytorch": "torch"}

# Which of pyproject's pinned dependencies each deployment group (env file stem) leaves out. The README's one
# install carries everything a local run needs; a job's env or image carries only what its rules import.
# Only the head process builds `--report`, so no job needs pygments.
_HEAD_ONLY = {"pygments"}
_GEARS = {"cell-gears", "torch-geometric"}
# Only rule embed_genes reads foundation-model checkpoints.
_EMBED = {"transformers"}
# Core stages never import torch; leaving it out keeps the CPU image and env free of CUDA wheels.
GROUP_OMITS = {
    "pertcal": {"torch"} | _GEARS | _EMBED | _HEAD_ONLY,
    "models": _GEARS | _EMBED | _HEAD_ONLY,
    "gears": _EMBED | _HEAD_ONLY,
    "embed": _GEARS | _HEAD_ONLY,
}


def recipe_sections(path) -> list[str]:
    """Names of the %sections in an Apptainer definition file, in file order (lower case)."""
    return [m.group(1).lower() for m in re.finditer(r"^%(\w+)", Path(path).read_text(), flags=re.M)]


def _header(path) -> dict[str, str]:
    """Header keywords (Bootstrap, From, ...) above the first %section, lower-case keys."""
    header = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("%"):
            break
        m = re.match(r"\s*(\w+):\s*(\S.*?)\s*$", line.split("#", 1)[0])
        if m:
            header[m.group(1).lower()] = m.group(2)
    return header


def parse_recipe(path):
    """Parse one Apptainer definition file with spython; return its single-stage spython Recipe."""
    from spython.main.parse.parsers import SingularityParser

    path = Path(path)
    if not path.is_file():
        raise PertcalInputError(f"container recipe {path}: file not found")
    header = _header(path)
    if header.get("bootstrap", "").lower() != "docker":
        raise PertcalInputError(f"container recipe {path}: field Bootstrap: must be 'docker' (spython reads no other)")
    try:
        stages = SingularityParser(str(path)).recipe
    except (Exception, SystemExit) as err:  # spython reports some failures by sys.exit
        raise PertcalInputError(f"container recipe {path}: spython could not parse it ({err!r})") from err
    if list(stages) != ["spython-base"]:
        raise PertcalInputError(f"container recipe {path}: field Stage: multi-stage recipes are not supported")
    recipe = stages["spython-base"]
    if not recipe.fromHeader:
        raise PertcalInputError(f"container recipe {path}: field From: missing base image")
    # spython takes any later line containing "from:" as the base image; refuse rather than build the wrong base.
    if recipe.fromHeader != header.get("from", "").lower():
        raise PertcalInputError(f"container recipe {path}: field From: a line inside a section contains 'from:'")
    missing = [s for s in REQUIRED_SECTIONS if s not in recipe_sections(path)]
    if missing:
        raise PertcalInputError(f"container recipe {path}: missing section(s) {', '.join('%' + s for s in missing)}")
    return recipe


def recipe_labels(recipe) -> dict[str, str]:
    """The recipe's %labels as a dict (key -> value)."""
    return dict((line.split(None, 1) + [""])[:2] for line in recipe.labels)


def recipe_sources(recipe) -> list[str]:
    """Host paths the recipe's %files section copies in (relative to the build context)."""
    return [line.split()[0] for line in recipe.files]


def _logical_lines(lines: list[str]) -> list[str]:
    """Join shell lines ending in a backslash continuation."""
    joined, buf = [], ""
    for line in lines:
        if line.endswith("\\"):
            buf += line[:-1] + " "
        else:
            joined.append(buf + line)
            buf = ""
    return joined + ([buf] if buf else [])


def _pip_arguments(tokens: list[str]) -> list[list[str]]:
    """Arguments after each `pip install` / `pip wheel` (also `python -m pip ...`) in one tokenized command line."""
    found = []
    for i, tok in enumerate(tokens):
        if not re.fullmatch(r"pip[0-9.]*", os.path.basename(tok)):  # pip, pip3, /opt/venv/bin/pip, -m pip
            continue
        j = i + 1
        while j < len(tokens) and tokens[j].startswith("-"):  # pip's global options before the subcommand
            j += 1
        if j < len(tokens) and tokens[j] in ("install", "wheel"):
            end = next((k for k in range(j + 1, len(tokens)) if set(tokens[k]) <= _SHELL_PUNCTUATION), len(tokens))
            found.append(tokens[j + 1 : end])
    return found


def pip_requirements(recipe) -> list[str]:
    """Package arguments of every `pip install`/`pip wheel` in %post (requirement strings or local paths)."""
    packages = []
    for line in _logical_lines(recipe.install):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        for args in _pip_arguments(list(lexer)):
            skip = False
            for arg in args:
                if skip:
                    skip = False
                elif arg in ("-r", "--requirement"):
                    packages.append(arg)  # a requirements file cannot be checked here: reported as unpinned
                elif arg in ("-e", "--editable"):
                    continue
                elif arg.split("=", 1)[0] in _PIP_VALUE_OPTIONS:
                    skip = "=" not in arg
                elif not arg.startswith("-"):
                    packages.append(arg)
    return packages


def is_local_path(arg: str) -> bool:
    """True for a path to a local source tree or wheel (absolute or ./relative), which pins itself."""
    return arg.startswith(("/", "./", "../"))


def unpinned(requirements: list[str]) -> list[str]:
    """The requirements that are neither an exact `name==version` pin nor a local path."""
    bad = []
    for req in requirements:
        if is_local_path(req):
            continue
        try:
            parsed = Requirement(req)
        except InvalidRequirement:
            bad.append(req)
            continue
        specs = list(parsed.specifier)
        if parsed.url or len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
            bad.append(req)
    return bad


def pins(requirements: list[str]) -> dict[str, str]:
    """Exact pins as {canonical name: version}; local paths and unpinned entries are skipped."""
    bad = set(unpinned(requirements))
    out = {}
    for req in requirements:
        if req in bad or is_local_path(req):
            continue
        parsed = Requirement(req)
        out[canonicalize_name(parsed.name)] = next(iter(parsed.specifier)).version
    return out


def check_recipe(path):
    """Parse a recipe and refuse it if any pip install is unpinned; return the spython Recipe."""
    recipe = parse_recipe(path)
    bad = unpinned(pip_requirements(recipe))
    if bad:
        raise PertcalInputError(
            f"container recipe {path}: field %post: unpinned pip install argument(s) {', '.join(bad)} "
            "(pin each as name==version, or install a local path)"
        )
    return recipe


def project_pins(pyproject) -> dict[str, str]:
    """Exact pins {canonical name: version} of pyproject's dependencies."""
    reqs = tomllib.loads(Path(pyproject).read_text())["project"]["dependencies"]
    bad = unpinned(reqs)
    if bad:
        raise PertcalInputError(f"{pyproject}: field dependencies: not exact pins: {', '.join(bad)}")
    return pins(reqs)


def group_pins(pyproject, group: str) -> dict[str, str]:
    """The pins a deployment group (pertcal, models, gears) must carry, taken from pyproject."""
    wanted = project_pins(pyproject)
    return {name: v for name, v in wanted.items() if name not in GROUP_OMITS[group]}


def conda_env_pins(path) -> tuple[dict[str, str], list[str]]:
    """Pins of a conda env file as ({PyPI-canonical name: version}, [entries that are not exact pins])."""
    env = yaml.safe_load(Path(path).read_text())
    out, bad = {}, []
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict):
            reqs = [r for r in dep.get("pip", []) if not r.startswith("-")]
            bad += unpinned(reqs)
            out.update(pins(reqs))
            continue
        spec = str(dep).split("::")[-1].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*==\s*([0-9][A-Za-z0-9_.+!]*)", spec)
        if not m:
            bad.append(str(dep))
            continue
        out[canonicalize_name(CONDA_TO_PYPI.get(m.group(1), m.group(1)))] = m.group(2)
    return out, bad


def to_dockerfile(path) -> str:
    """Dockerfile text for a checked Apptainer recipe, via spython's DockerWriter (build context = repo root)."""
    from spython.main.parse.writers import DockerWriter

    recipe = check_recipe(path)
    if any("USER" in line for line in recipe.install):
        raise PertcalInputError(f"container recipe {path}: field %post: spython cannot convert a line with 'USER'")
    # Docker's LABEL wants key=value; spython copies Apptainer's `key value` lines verbatim.
    recipe.labels = [f"{k}={json.dumps(v)}" for k, v in recipe_labels(recipe).items()]
    # A shell-form CMD drops `docker run` arguments; `exec prog "$@"` becomes an exec-form ENTRYPOINT instead.
    m = re.fullmatch(r'exec\s+(\S+)\s+"\$@"', (recipe.cmd or "").strip())
    if m:
        recipe.entrypoint, recipe.cmd = json.dumps([m.group(1)]), None
    # spython maps %test to a bare HEALTHCHECK line, which Docker rejects; Apptainer runs %test once after the
    # build, so run the same script once at the end of the Docker build.
    if recipe.test:
        recipe.install.append(recipe.test)
        recipe.test = None
    # spython writes any line containing "USER" (PYTHONNOUSERSITE=1 ...) without its ENV keyword: write ENV here.
    env = [f"ENV {line}" for line in recipe.environ]
    recipe.environ = []
    first, rest = DockerWriter({"spython-base": recipe}).convert().split("\n", 1)
    stem = Path(path).stem
    header = [
        f"# Generated from containers/{stem}.def by pertcal.containers.to_dockerfile (spython): edit the .def.",
        f"# Build from the repository root: docker build -f containers/docker/{stem}.Dockerfile -t pertcal-{stem} .",
    ]
    return "\n".join([*header, first, *env, rest]) + "\n"


def build_image(recipe, image, context, log=None) -> None:
    """Build `image` from a checked recipe with Apptainer (or Singularity), run from the build context directory."""
    check_recipe(recipe)
    binary = shutil.which("apptainer") or shutil.which("singularity")
    if binary is None:
        raise PertcalInputError(
            f"container recipe {recipe}: neither apptainer nor singularity is on PATH; build {image} on a machine "
            "that has Apptainer, or use the host environment / conda instead"
        )
    image = Path(image).absolute()
    with atomic_path(image) as tmp:
        # --force: atomic_path has already created the (empty) temporary file
        cmd = [binary, "build", "--force", str(tmp), str(Path(recipe).absolute())]
        logging.getLogger(__name__).info("running %s in %s", shlex.join(cmd), Path(context).absolute())
        # %files paths are relative to the directory the build runs in: the repository root.
        with open(log or os.devnull, "a") as out:
            subprocess.run(cmd, cwd=context, stdout=out, stderr=subprocess.STDOUT, check=True)
