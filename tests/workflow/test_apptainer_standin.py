"""What the workflow asks of Apptainer, checked with an `apptainer` STAND-IN.

The stand-in below is NOT Apptainer and proves nothing about Apptainer itself (it is not installable here). It is a
small script placed first on PATH that records every argv Snakemake (or the build rule) hands to `apptainer`, answers
`--version`, writes a placeholder file for `pull` and `build`, and for `exec` checks the image file and bind sources
exist and then runs the inner command natively on the host. The test asserts on those recorded requests: which image
each model job names, the home and bind mounts, and `--nv` for the GPU (model) jobs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]

APPTAINER_STANDIN = r'''
"""STAND-IN for `apptainer` (not Apptainer): record argv, then pull/build a placeholder or exec natively."""
import json
import os
import sys

VALUE_OPTIONS = {"--home", "-H", "--bind", "-B", "--pwd", "--env", "--env-file", "--workdir", "-W", "--overlay", "-o",
                 "--mount", "--security", "--scratch", "-S", "--network", "--hostname"}
GLOBAL_FLAGS = {"--quiet", "-q", "--silent", "-s", "--debug", "-d", "--verbose", "-v", "--nocolor"}
KEEP_ON_CLEANENV = {"PATH", "HOME", "TERM", "LANG", "LC_ALL", "TMPDIR", "USER"}


def fail(msg):
    print(f"apptainer stand-in: {msg}", file=sys.stderr)
    sys.exit(255)


argv = sys.argv[1:]
with open(os.environ["APPTAINER_STANDIN_RECORD"], "a") as rec:
    rec.write(json.dumps({"argv": argv, "cwd": os.getcwd()}) + "\n")
while argv and argv[0] in GLOBAL_FLAGS:
    argv = argv[1:]
if argv in (["--version"], ["version"]):
    print("apptainer version 1.3.6")  # Snakemake parses this and requires >= 1.0.0
    sys.exit(0)
if not argv:
    fail("no command")
verb, rest = argv[0], argv[1:]
if verb == "pull":  # Snakemake: apptainer pull --name HASH.simg docker://..., run in the image cache directory
    if "--name" not in rest or not rest[-1].startswith("docker://"):
        fail(f"pull expects --name NAME docker://URI, got {rest}")
    with open(rest[rest.index("--name") + 1], "w") as f:
        f.write(f"stand-in image for {rest[-1]}\n")
    sys.exit(0)
if verb == "build":  # apptainer build [options] IMAGE RECIPE
    with open(rest[-2], "w") as f:
        f.write(f"stand-in image built from {rest[-1]}\n")
    sys.exit(0)
if verb != "exec":
    fail(f"unsupported verb {verb!r}")
opts, i = {}, 0
while i < len(rest) and rest[i].startswith("-"):
    key, _, inline = rest[i].partition("=")
    if key in VALUE_OPTIONS and not inline:
        opts.setdefault(key, []).append(rest[i + 1])
        i += 2
    else:
        opts.setdefault(key, []).append(inline or True)
        i += 1
if i + 1 >= len(rest):
    fail("exec needs IMAGE COMMAND...")
image, cmd = rest[i], rest[i + 1 :]
if not os.path.isfile(image):
    fail(f"image {image} not found")  # as Apptainer would
for bind in opts.get("--bind", []) + opts.get("-B", []):
    for spec in bind.split(","):
        if not os.path.exists(spec.split(":")[0]):
            fail(f"bind source {spec.split(':')[0]} does not exist")
env = dict(os.environ)
if "--cleanenv" in opts or "-e" in opts:
    env = {k: v for k, v in env.items() if k in KEEP_ON_CLEANENV}
for prefix in ("APPTAINERENV_", "SINGULARITYENV_"):
    env.update({k[len(prefix) :]: v for k, v in os.environ.items() if k.startswith(prefix)})
home = (opts.get("--home") or opts.get("-H") or [None])[-1]
if home:
    env["HOME"] = home.split(":")[-1]
pwd = (opts.get("--pwd") or [None])[-1]
if pwd:
    os.chdir(pwd)
os.execvpe(cmd[0], cmd, env)
'''

DATASET, TASK, FOLD = "sim_wessels", "combo", 0  # the smallest demo dataset
LOCAL_MODEL, PULLED_MODEL = "linear_additive", "decoder_only"
PULLED_URI = "docker://pertcal/decoder_only:0.1.0"


def _exec_options(argv: list[str]) -> tuple[dict[str, list], str, list[str]]:
    """Split a recorded `exec` argv into (options, image, command) the way Apptainer reads it."""
    rest = argv[argv.index("exec") + 1 :]
    opts, i = {}, 0
    while rest[i].startswith("-"):
        if rest[i] in ("--home", "--bind", "--pwd"):
            opts.setdefault(rest[i], []).append(rest[i + 1])
            i += 2
        else:
            opts.setdefault(rest[i], []).append(True)
            i += 1
    return opts, rest[i], rest[i + 1 :]


@pytest.fixture
def standin_env(tmp_path):
    """PATH with the stand-in first (then the interpreter's own bin for `python`/`pertcal-model`), and its record."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "apptainer"
    exe.write_text(f"#!{sys.executable}\n{APPTAINER_STANDIN}")
    exe.chmod(0o755)
    record = tmp_path / "apptainer_calls.jsonl"
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
    return {**os.environ, "PATH": path, "APPTAINER_STANDIN_RECORD": str(record)}, record


def _calls(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_model_jobs_ask_apptainer_for_their_image_binds_and_gpu(workflow, standin_env):
    env, record = standin_env
    for name in ("pyproject.toml", "README.md"):  # the build context rule build_container lists as input
        shutil.copy2(REPO / name, workflow.path / name)
    config = {
        "run": [DATASET],
        "models": {  # two epochs: the test checks wiring, not training
            LOCAL_MODEL: {"container": f"containers/{LOCAL_MODEL}.sif", "params": {"epochs": 2}},
            PULLED_MODEL: {"container": PULLED_URI, "params": {"epochs": 2, "hidden_dim": 32}},
        },
    }

    # 1. the local image comes from rule build_container, which calls `apptainer build` from the repository root
    workflow.run("-c2", f"containers/{LOCAL_MODEL}.sif", config=config, env=env)
    build = [c for c in _calls(record) if "build" in c["argv"]]
    assert len(build) == 1 and build[0]["cwd"] == str(workflow.path)
    assert build[0]["argv"][-1] == str(workflow.path / "containers" / f"{LOCAL_MODEL}.def")
    record.unlink()

    # 2. train + predict of both models on one fold, through Apptainer with --nv
    targets = [f"results/{DATASET}/predictions/{TASK}/fold{FOLD}/{m}.h5ad" for m in (LOCAL_MODEL, PULLED_MODEL)]
    workflow.run("-c2", "--software-deployment-method", "apptainer", "--apptainer-args=--nv", *targets,
                 config=config, env=env)  # fmt: skip
    calls = _calls(record)
    assert ["--version"] in [c["argv"] for c in calls]
    cache = workflow.path / ".snakemake" / "singularity"
    pulled = cache / (hashlib.md5(PULLED_URI.encode()).hexdigest() + ".simg")
    pulls = [c for c in calls if c["argv"][:1] == ["pull"]]
    assert [(c["argv"], c["cwd"]) for c in pulls] == [(["pull", "--name", pulled.name, PULLED_URI], str(cache))]

    # every job that went through apptainer is a model job (the core stages have no container: they run natively)
    jobs = []
    for call in calls:
        if "exec" not in call["argv"]:
            continue
        opts, image, cmd = _exec_options(call["argv"])
        command = " ".join(cmd)
        m = re.search(r"pertcal-model (train) .*--name (\S+)|pertcal-model (predict) --checkpoint \S+/(\w+) ", command)
        assert m, f"a job other than train_model/predict_model ran through apptainer: {command}"
        verb, model = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        jobs.append((verb, model, opts, image, call["cwd"]))
    models = sorted((LOCAL_MODEL, PULLED_MODEL))
    assert sorted(j[:2] for j in jobs) == [(verb, m) for verb in ("predict", "train") for m in models]
    for verb, model, opts, image, cwd in jobs:
        assert image == (f"containers/{LOCAL_MODEL}.sif" if model == LOCAL_MODEL else str(pulled)), (verb, model)
        assert opts["--nv"] == [True], (verb, model)
        # the working directory is the container's home, which makes results/ and resources/ visible inside
        assert opts["--home"] == [str(workflow.path)] and cwd == str(workflow.path)
        assert opts["--bind"] and all(Path(b.split(":")[0]).is_dir() for b in opts["--bind"])

    # the jobs ran (natively, under the stand-in) and wrote predictions in the baselines' format
    folds = pd.read_parquet(workflow.path / f"results/{DATASET}/folds_{TASK}.parquet")
    test = folds[(folds["fold"] == FOLD) & (folds["split"] == "test")]["perturbation"].tolist()
    for target in targets:
        pred = ad.read_h5ad(workflow.path / target)
        assert pred.obs_names.tolist() == test and pred.uns["fold"] == FOLD
