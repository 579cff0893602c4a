"""Bad input through the workflow: a clear error naming the dataset and the problem, and no partial output."""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

pytestmark = pytest.mark.workflow


def write_raw(path, *, labels=None, values=None, genes=None, column="perturbation"):
    rng = np.random.default_rng(0)
    labels = labels if labels is not None else ["control"] * 40 + ["G0001"] * 20 + ["G0002"] * 20
    genes = genes or [f"G{j:04d}" for j in range(30)]
    x = values if values is not None else rng.poisson(3, size=(len(labels), len(genes))).astype(np.float32)
    obs = pd.DataFrame({column: labels}, index=[f"c{i}" for i in range(len(labels))])
    ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)


def user_dataset(path, **extra):
    return {
        "run": ["mine"],
        "datasets": {"mine": {"source": {"path": str(path)}, "modality": "CRISPRi", **extra,
                              "processing": {"min_genes_per_cell": 1, "n_hvg": 20, "n_folds_single": 2}}},
    }


def bad_values(kind):
    x = np.random.default_rng(1).poisson(3, size=(80, 30)).astype(np.float32)
    if kind == "nan":
        x[3, 4] = np.nan
    elif kind == "negative":
        x[3, 4] = -1
    else:
        x = x + 0.5
    return x


@pytest.mark.parametrize(
    "case, raw, extra, message",
    [
        ("missing column", dict(column="guide"), {}, r"perturbation column obs\['perturbation'\] is missing"),
        ("no controls", dict(labels=["NT"] * 40 + ["G0001"] * 40), {}, "no control cells"),
        ("duplicate genes", dict(genes=[f"G{j:04d}" for j in range(29)] + ["G0003"]), {}, "duplicate gene names"),
        ("nan", dict(values=bad_values("nan")), {}, "NaN"),
        ("negative", dict(values=bad_values("negative")), {}, "negative values"),
        ("non-integer counts", dict(values=bad_values("frac")), {"values": "counts"}, "declared as counts"),
    ],
)
def test_bad_h5ad_fails_clearly_without_output(workflow, tmp_path, case, raw, extra, message):
    write_raw(tmp_path / "mine.h5ad", **raw)
    result = workflow.run("results/mine/processed.h5ad", "-c1", config=user_dataset(tmp_path / "mine.h5ad", **extra),
                          check=False)
    assert result.returncode != 0, case
    log = (workflow.path / "logs" / "preprocess_dataset" / "mine.log").read_text()
    assert "dataset 'mine'" in log and str(tmp_path / "mine.h5ad") in log
    assert re.search(message, log), log[-2000:]
    leftovers = [p.name for p in (workflow.path / "results").rglob("*") if p.is_file()]
    assert leftovers == [], leftovers


@pytest.mark.parametrize(
    "run, message",
    [
        (["not_a_dataset"], "unknown dataset 'not_a_dataset'"),
        (["evil; rm -rf ~"], "must match"),
    ],
)
def test_bad_dataset_names_rejected_before_any_job(workflow, run, message):
    result = workflow.run("-n", config={"run": run}, check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


# --- a changed or unverifiable source is never reported as up to date; bad config is refused before any job ---

SCREEN = ["control"] * 60 + [f"G{j:04d}" for j in range(1, 7) for _ in range(20)]


def screen_config(path, *, processing=None, **source):
    """A user dataset of 6 perturbations read from `path` (2 single folds: 8 control-method jobs to its DRF)."""
    config = user_dataset(path)
    entry = config["datasets"]["mine"]
    entry["source"].update(source)
    entry["processing"].update({"n_folds_single": 2, **(processing or {})})
    return config


def benchmark_outputs(workflow):
    """Prediction, metric and DRF files of the run, with their modification times."""
    res = workflow.path / "results"
    files = [*res.glob("*/predictions/**/*.h5ad"), *res.glob("*/metrics/**/*.parquet"), *res.glob("*/drf.parquet")]
    return {str(p.relative_to(res)): p.stat().st_mtime_ns for p in files}


def failed(result, workflow, log, *fragments):
    """The run failed, and the job's log (or Snakemake's own output) holds every fragment."""
    assert result.returncode != 0, result.stdout[-2000:]
    text = (workflow.path / log).read_text() if log else result.stderr + result.stdout
    missing = [f for f in fragments if f not in text]
    assert not missing, (missing, text[-3000:])
    return text


def test_changed_source_is_recomputed_or_fails_never_reported_as_current(workflow, tmp_path):
    raw = tmp_path / "mine.h5ad"
    write_raw(raw, labels=SCREEN)
    config = screen_config(raw)
    workflow.run("results/mine/drf.parquet", "-c1", config=config)
    done = benchmark_outputs(workflow)
    assert "mine/drf.parquet" in done and len(done) == 17, sorted(done)

    # the source now holds a NaN: preprocessing fails and removes its output
    values = np.random.default_rng(1).poisson(3, (len(SCREEN), 30)).astype(np.float32)
    values[3, 4] = np.nan
    write_raw(raw, labels=SCREEN, values=values)
    result = workflow.run("results/mine/drf.parquet", "-c1", config=config, check=False)
    failed(result, workflow, "logs/preprocess_dataset/mine.log", "dataset 'mine'", str(raw), "NaN")
    assert not (workflow.path / "results/mine/processed.h5ad").exists()

    # the next run must not take the old DRF for current: it tries the changed source again, and fails again
    result = workflow.run("results/mine/drf.parquet", "-c1", config=config, check=False)
    assert "Nothing to be done" not in result.stdout + result.stderr
    failed(result, workflow, "logs/preprocess_dataset/mine.log", "dataset 'mine'", str(raw), "NaN")
    assert benchmark_outputs(workflow) == done  # nothing was computed from the bad file

    # a good file again: everything of the dataset is recomputed from it
    write_raw(raw, labels=SCREEN, values=np.random.default_rng(5).poisson(4, (len(SCREEN), 30)).astype(np.float32))
    workflow.run("results/mine/drf.parquet", "-c1", config=config)
    again = benchmark_outputs(workflow)
    assert again.keys() == done.keys() and all(again[f] > done[f] for f in done)
    assert "Nothing to be done" in workflow.run("results/mine/drf.parquet", "-c1", config=config).stderr


def test_local_source_checksum_is_verified_whenever_the_file_changes(workflow, tmp_path):
    raw = tmp_path / "mine.h5ad"
    write_raw(raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    wrong = "0" * 64
    result = workflow.run("results/mine/processed.h5ad", "-c1", config=user_dataset_with(raw, sha256=wrong),
                          check=False)
    failed(result, workflow, "logs/verify_source/mine.log", "dataset 'mine'", str(raw), "source.sha256",
           f"expected {wrong}, got {digest}", "update source.sha256 in config.yaml")
    assert not (workflow.path / "results").exists() or not any((workflow.path / "results").rglob("*.*"))

    workflow.run("results/mine/processed.h5ad", "-c1", config=user_dataset_with(raw, sha256=digest))
    processed = (workflow.path / "results/mine/processed.h5ad").stat().st_mtime_ns

    # the file is replaced behind the config's back: verified again, refused, before preprocessing reads it
    write_raw(raw, labels=["control"] * 40 + ["G0001"] * 40)
    for _ in range(2):  # and again on the next run: the failed check is not forgotten
        result = workflow.run("results/mine/processed.h5ad", "-c1", config=user_dataset_with(raw, sha256=digest),
                              check=False)
        failed(result, workflow, "logs/verify_source/mine.log", f"expected {digest}, got "
               f"{hashlib.sha256(raw.read_bytes()).hexdigest()}")
    assert (workflow.path / "results/mine/processed.h5ad").stat().st_mtime_ns == processed


def user_dataset_with(path, **source):
    config = user_dataset(path)
    config["datasets"]["mine"]["source"].update(source)
    return config


def test_stale_temporary_of_a_killed_job_is_removed_by_the_next_write(workflow, tmp_path):
    write_raw(tmp_path / "mine.h5ad")
    stale = workflow.path / "results" / "mine" / ".processed.h5ad.k1ll3d00.tmp.h5ad"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half an h5ad")
    workflow.run("results/mine/processed.h5ad", "-c1", config=user_dataset(tmp_path / "mine.h5ad"))
    assert sorted(p.name for p in stale.parent.iterdir()) == ["processed.h5ad", "qc.json"]


def test_more_folds_than_perturbations_is_refused_before_any_prediction(workflow, tmp_path):
    write_raw(tmp_path / "mine.h5ad")  # two perturbations
    config = screen_config(tmp_path / "mine.h5ad", processing={"n_folds_single": 3})
    result = workflow.run("results/mine/drf.parquet", "-c1", config=config, check=False)
    # refused by the first stage, which knows the dataset's tasks (assign_folds refuses it too: test_split.py)
    failed(result, workflow, "logs/preprocess_dataset/mine.log", "dataset 'mine'", "mine.h5ad",
           "2 perturbations remain after QC, too few for task 'single'", "processing.n_folds_single = 3")
    assert benchmark_outputs(workflow) == {}
    assert not (workflow.path / "results/mine/folds_single.parquet").exists()


@pytest.mark.parametrize(
    "config, fragments",
    [
        ({"procesing": {"n_hvg": 100}}, ["unknown key 'procesing'", "did you mean 'processing'?"]),
        ({"modles": {}}, ["unknown key 'modles'", "did you mean 'models'?"]),
        ({"processing": {"n_hgv": 100}}, ["config 'processing': unknown key 'n_hgv'", "'n_hvg'"]),
        ({"datasets": {"sim_gwps": {"perturbation_colum": "x"}}},
         ["dataset 'sim_gwps': unknown key 'perturbation_colum'", "'perturbation_column'"]),
        ({"datasets": {"sim_gwps": {"harmonizers": [{"name": "cut_at_first", "separator": "_"}]}}},
         ["dataset 'sim_gwps', field harmonizers[0] (harmonizer 'cut_at_first')", "unknown key 'separator'",
          "valid keys: sep"]),
        ({"datasets": {"sim_gwps": {"harmonizers": [{"name": "label_controls"}]}}},
         ["harmonizer 'label_controls'", "missing a required argument: 'pattern'", "(required: pattern)"]),
        ({"datasets": {"sim_gwps": {"harmonizers": [{"name": "label_controls", "pattern": "(NT"}]}}},
         ["dataset 'sim_gwps', field harmonizers[0] (harmonizer 'label_controls')",
          "argument 'pattern' '(NT' is not a valid regular expression", "missing ), unterminated subpattern"]),
    ],
    ids=["top-level typo", "models typo", "processing typo", "dataset typo", "harmonizer argument",
         "harmonizer missing argument", "harmonizer regex"],
)
def test_config_mistakes_are_refused_before_any_job(workflow, config, fragments):
    result = workflow.run("-n", config={"run": ["sim_gwps"], **config}, check=False)
    failed(result, workflow, None, "PertcalInputError", *fragments)
    assert not (workflow.path / "results").exists() and not (workflow.path / "resources").exists()


class _Mirror(BaseHTTPRequestHandler):
    """Serves `server.body` for every GET and counts the requests."""

    def do_GET(self):
        self.server.requests += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mirror():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Mirror)
    srv.requests, srv.url = 0, f"http://127.0.0.1:{srv.server_address[1]}/mine.h5ad"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


@pytest.mark.parametrize("case", ["wrong checksum", "not an h5ad"])
def test_bad_download_is_final_and_never_kept(workflow, tmp_path, mirror, case):
    write_raw(tmp_path / "mine.h5ad")
    if case == "wrong checksum":
        mirror.body, source = (tmp_path / "mine.h5ad").read_bytes(), {"sha256": "0" * 64}
        reason = f"sha256 mismatch: got {hashlib.sha256(mirror.body).hexdigest()}, expected {'0' * 64}"
    else:  # a login page served with 200 and no checksum to catch it
        mirror.body, source, reason = b"<html>Please sign in</html>", {}, "not an h5ad file: no HDF5 signature"
    config = {"run": ["mine"], "datasets": {"mine": {"source": {"url": [mirror.url], **source}, "modality": "KO"}}}
    # --retries as a cluster profile sets it: a failure that another download cannot fix is still not repeated
    result = workflow.run("results/mine/drf.parquet", "-c1", "--retries", "2", config=config, check=False)
    failed(result, workflow, "logs/download_dataset/mine.log", "dataset 'mine'", mirror.url, reason,
           "Fix the dataset's source")
    assert mirror.requests == 1
    assert list(workflow.path.glob("resources/**/*.h5ad*")) == []  # neither raw.h5ad nor a .part to resume
    assert not (workflow.path / "results").exists() or benchmark_outputs(workflow) == {}
