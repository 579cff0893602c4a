"""The dataset-quality and perturbation-strength analyses on the small demo's outputs, run by Snakemake: complete,
deterministic, and the energy distances equal scanpy's PCA + scperturb.edist on the pipeline's processed cells."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scperturb

from conftest import SMALL_DEMO, SMALL_DEMO_TARGETS, Workflow

pytestmark = pytest.mark.workflow

DATASETS = SMALL_DEMO["run"]
FIGURES = [f"results/figures/{n}.{e}" for n in ("drf_vs_quality", "strength_genes", "titration") for e in ("pdf", "png")]
TARGETS = (*FIGURES, "results/analyses/drf_vs_quality_spearman.parquet")
assert set(FIGURES) <= set(SMALL_DEMO_TARGETS)


@pytest.fixture(scope="module")
def analyses_run(small_demo, tmp_path_factory) -> Workflow:
    """A copy of the small demo (whose targets include the analyses), for tests that rerun jobs: the original stays
    unchanged for its other readers."""
    wf = Workflow(tmp_path_factory.mktemp("analyses") / "workflow")
    wf.replace_config(models={})
    wf.copy_results_of(small_demo)
    result = wf.run(*TARGETS, "-c2", config=SMALL_DEMO)
    assert "Nothing to be done" in result.stdout + result.stderr
    return wf


def test_outputs_complete(analyses_run):
    res = analyses_run.path / "results"
    for name in TARGETS:
        assert (analyses_run.path / name).stat().st_size > 0, name
    for ds in DATASETS:
        obs = ad.read_h5ad(res / ds / "processed.h5ad", backed="r").obs
        n_perts = obs.loc[~obs["is_control"], "perturbation"].nunique()
        pairs = pd.read_parquet(res / ds / "analyses" / "edist_pairs.parquet")
        assert len(pairs) == (n_perts + 1) * n_perts // 2 and np.isfinite(pairs["edist"]).all()
        quality = json.loads((res / ds / "analyses" / "quality.json").read_text())
        assert quality["n_pcs"] == 50 and quality["n_perturbations_edist"] == n_perts and quality["mean_edist"] > 0
        genes = pd.read_parquet(res / ds / "analyses" / "strength_genes.parquet")
        n_values = genes.groupby("method")["n"].sum()
        folds = pd.concat(pd.read_parquet(p) for p in (res / ds).glob("folds_*.parquet"))
        degs = ad.read_h5ad(res / ds / "degs_gt.h5ad", backed="r")
        tested = folds.loc[folds["split"] == "test", "perturbation"].isin(degs.obs_names).sum()
        assert (n_values == tested * degs.n_vars).all()
        titration = pd.read_parquet(res / ds / "analyses" / "titration.parquet")
        assert (titration["size"] <= titration["n_td_cells"]).all() and set(titration["repeat"]) == {0, 1, 2}
        assert np.isfinite(titration[["mse", "mse_mean", "mse_technical_duplicate"]]).all().all()


def test_energy_distances_equal_scperturb_on_the_processed_cells(analyses_run):
    ds = "sim_gwps"
    res = analyses_run.path / "results" / ds
    cells = ad.read_h5ad(res / "processed.h5ad")
    cells.X = cells.X.astype(np.float64)
    sc.pp.pca(cells, n_comps=50, dtype="float64")
    ref = scperturb.edist(cells, obs_key="perturbation", n_jobs=1, verbose=False)
    pairs = pd.read_parquet(res / "analyses" / "edist_pairs.parquet")
    expected = ref.to_numpy()[ref.index.get_indexer(pairs["perturbation_a"]), ref.columns.get_indexer(pairs["perturbation_b"])]
    np.testing.assert_allclose(pairs["edist"], expected, rtol=1e-6)


def test_tables_are_deterministic(analyses_run):
    outputs = [f"results/{ds}/analyses/{n}" for ds in DATASETS for n in (
        "edist_pairs.parquet", "edist_perturbations.parquet", "quality.json", "strength_genes.parquet", "titration.parquet")]
    before = {p: (analyses_run.path / p).read_bytes() for p in outputs}
    analyses_run.run(*outputs, "-c2", "--forcerun", "measure_dataset_quality", "measure_perturbation_strength", config=SMALL_DEMO)
    assert {p: (analyses_run.path / p).read_bytes() for p in outputs} == before
