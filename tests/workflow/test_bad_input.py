"""Bad input through the workflow: a clear error naming the dataset and the problem, and no partial output."""

from __future__ import annotations

import re

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
                              "processing": {"min_genes_per_cell": 1, "n_hvg": 20}}},
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
