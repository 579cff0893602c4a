"""The foundation-model arm end to end on one simulated dataset: tiny stand-in checkpoints served from 127.0.0.1 are
fetched by fetch_resource (pinned in the lock file on first use), embedded by embed_genes, and read by the four
fmlp_<source> models, whose predictions reach results/sim_norman/metrics.parquet; the dataset summary reports each
embedding's coverage of the perturbations. Also: a needed resource with no URL stops the run before any job."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

import tiny_checkpoints as tiny

SOURCES = ("esm2", "geneformer", "genept", "scgpt")
TARGET = "results/sim_norman/metrics.parquet"
# sim_norman scaled down (fewer genes and cells), one baseline, the four models briefly trained on the first fold pair
SMALL = {
    "run": ["sim_norman"],
    "baselines": ["mean"],
    "datasets": {
        "sim_norman": {
            "source": {"simulate": {"n_genes": 300, "n_perturbations": 12, "n_combos": 12, "cells_per_perturbation": 40,
                                    "n_control_cells": 200, "mean_degs": 30}},
            "processing": {"n_hvg": 250},
        }
    },
}  # fmt: skip
SYMBOLS = [f"G{i:05d}" for i in range(1, 301)]  # the simulator's gene symbols (docs/simulator.md)
# each source leaves out other genes, so coverage differs between sources and is below 1 for some
LEFT_OUT = {"esm2": SYMBOLS[::4], "geneformer": SYMBOLS[1::5], "genept": [], "scgpt": SYMBOLS[2::3]}


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """Serve tmp_path/served over HTTP on 127.0.0.1; yields (directory, base URL, list of requested paths)."""
    root = tmp_path / "served"
    root.mkdir()
    requested = []

    class Handler(_Quiet):
        def do_GET(self):
            requested.append(self.path)
            super().do_GET()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{srv.server_address[1]}", requested
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def _stand_ins(root: Path, config: dict) -> None:
    """Write a tiny stand-in of every file the four embedding sources read, at its resource name below `root`."""
    covered = {s: [g for g in SYMBOLS if g not in set(LEFT_OUT[s])] for s in SOURCES}
    files = {s: config["embeddings"][s]["files"] for s in SOURCES}
    esm = tiny.esm2_checkpoint(root / Path(files["esm2"]["config"]).parent)
    rng = np.random.default_rng(0)
    tiny.proteome_fasta(root / "proteome.fasta", {g: tiny.protein(rng, int(rng.integers(20, 40))) for g in covered["esm2"]})
    import gzip

    (root / files["esm2"]["proteome"]).parent.mkdir(parents=True, exist_ok=True)
    (root / files["esm2"]["proteome"]).write_bytes(gzip.compress((root / "proteome.fasta").read_bytes(), mtime=0))
    assert {p.name for p in esm.iterdir()} >= {Path(f).name for f in files["esm2"].values() if "esm2" in f}
    written = tiny.geneformer_checkpoint(root / "geneformer_tmp", covered["geneformer"])
    for role, path in written.items():
        (root / files["geneformer"][role]).parent.mkdir(parents=True, exist_ok=True)
        path.replace(root / files["geneformer"][role])
    for role, path in tiny.scgpt_checkpoint(root / Path(files["scgpt"]["weights"]).parent, covered["scgpt"]).items():
        assert path == root / files["scgpt"][role]
    tiny.genept_zip(root / files["genept"]["table"], covered["genept"])


@pytest.mark.workflow
def test_fetched_checkpoints_embed_genes_and_train_the_four_fmlp_variants(workflow, file_server):
    root, base, requested = file_server
    config = yaml.safe_load((workflow.path / "config.yaml").read_text())
    _stand_ins(root, config)
    names = sorted({n for s in SOURCES for n in config["embeddings"][s]["files"].values()})
    resources = {n: {**config["resources"][n], "url": [f"{base}/{n}"]} for n in names}
    models = {}
    for source in SOURCES:
        spec = {k: v for k, v in config["models"][f"fmlp_{source}"].items() if k != "panels"}
        # tiny networks: a small memory request lets two model jobs run side by side
        models[f"fmlp_{source}"] = {**spec, "simulated_params": {"epochs": 3, "val_every": 1}, "simulated_folds": 1,
                                    "simulated_resources": {"cpus_per_task": 1, "mem_mb": 2000}}  # fmt: skip
    workflow.replace_config(models=models, resources=resources)

    workflow.run(TARGET, "results/sim_norman/summary.json", "-c2", config=SMALL, timeout=1500)

    # every resource fetched once over loopback, and pinned on first use with the digest of the served bytes
    assert sorted(p.lstrip("/") for p in requested) == names
    lock = yaml.safe_load((workflow.path / "resources.lock.yaml").read_text())
    assert lock == {n: hashlib.sha256((root / n).read_bytes()).hexdigest() for n in names}
    for n in names:
        assert (workflow.path / "resources/external" / n).read_bytes() == (root / n).read_bytes()

    processed = ad.read_h5ad(workflow.path / "results/sim_norman/processed.h5ad", backed="r")
    perts = processed.obs.loc[~processed.obs["is_control"], "perturbation"].astype(str).unique()
    summary = json.loads((workflow.path / "results/sim_norman/summary.json").read_text())
    for source in SOURCES:
        table = pd.read_parquet(workflow.path / f"resources/embeddings/{source}.parquet")
        assert table.columns[0] == "gene" and (table.dtypes.iloc[1:] == np.float32).all()
        assert sorted(table["gene"]) == sorted(set(SYMBOLS) - set(LEFT_OUT[source]))
        # coverage recomputed here: a perturbation counts when every gene of its "A+B" label has a row
        have = set(table["gene"])
        expected = np.mean([all(g in have for g in p.split("+")) for p in perts])
        assert summary[f"coverage_{source}"] == pytest.approx(expected)
    assert summary["coverage_genept"] == 1.0 and summary["coverage_scgpt"] < 1.0

    metrics = pd.read_parquet(workflow.path / TARGET)
    assert {f"fmlp_{s}" for s in SOURCES} <= set(metrics["method"])
    for source in SOURCES:
        scored = metrics[metrics["method"] == f"fmlp_{source}"]
        assert scored["value"].notna().any(), source


@pytest.mark.workflow
def test_a_needed_resource_without_url_stops_the_run_before_any_job(workflow):
    config = yaml.safe_load((workflow.path / "config.yaml").read_text())
    name = "gears/gene2go_all.pkl"
    workflow.replace_config(resources={**config["resources"], name: {"licence": "MIT"}})
    result = workflow.run("-n", "--config", "run=[norman19]", check=False, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"resource {name!r}" in out and f"resources/external/{name}" in out, out[-3000:]
    assert "Job stats" not in out
    # the demo reads no external file: the same config plans
    assert workflow.run("-n", check=False, timeout=300).returncode == 0
    # a model's panels must exist
    wrong = workflow.run("-n", config={"models": {"fmlp_esm2": {"panels": ["publshed"]}}}, check=False, timeout=300)
    assert "'fmlp_esm2' field panels names 'publshed'" in wrong.stdout + wrong.stderr
