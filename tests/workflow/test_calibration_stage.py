"""The metric calibration (`snakemake calibration`) end to end on the small simulated demo, with the simulator's truth."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from conftest import SMALL_DEMO as SMALL
from pertcal.baselines import GAMING_PREDICTORS
from pertcal.metrics import metric_specs, panel_metrics

pytestmark = pytest.mark.workflow

TABLES = ("panel_drf.parquet", "bds.parquet", "gameability.parquet", "trust.csv")


@pytest.fixture(scope="module")
def calibrated(small_demo):
    small_demo.run("results/calibration/calibration.done", "-c2", config=SMALL)
    return small_demo


def _scores(res, dataset: str) -> pd.DataFrame:
    """Per-perturbation values of the controls (the benchmark's metric tables) and of the calibration controls."""
    metrics = pd.read_parquet(res / "metrics.parquet")
    return pd.concat([metrics[metrics["dataset"] == dataset], pd.read_parquet(res / dataset / "calibration" / "scores.parquet")])


def test_tables_cover_every_metric_dataset_and_control(calibrated):
    res = calibrated.path / "results" / "calibration"
    drf = pd.read_parquet(res / "panel_drf.parquet")
    assert set(drf["metric"]) == set(panel_metrics(("paper",))) and set(drf["dataset"]) == {"sim_gwps", "sim_wessels"}
    assert set(drf["negative_control"]) == {"mean", "mean_loo"}
    assert set(drf["positive_control"]) == {"interpolated_duplicate", "technical_duplicate"}
    ok = drf.dropna(subset=["mean_drf"])
    assert (ok["ci_low"] <= ok["mean_drf"] + 1e-12).all() and (ok["mean_drf"] <= ok["ci_high"] + 1e-12).all()
    assert ok["mean_drf"].between(-1, 1).all()
    assert set(drf.loc[drf["drf_identical_to"].notna(), "metric"]) == {"r2_deltactrl", "weighted_r2_deltactrl"}
    bds = pd.read_parquet(res / "bds.parquet")
    assert bds["bds"].between(0, 1).all() and (bds["p_permutation"] >= 1 / (1 + 1000)).all()
    gaming = pd.read_parquet(res / "gameability.parquet")
    assert set(gaming["predictor"]) == set(GAMING_PREDICTORS)
    for name in ("panel_drf", "drf_negative_controls", "gameability", "deg_sensitivity"):
        assert (res / f"{name}.png").stat().st_size > 10_000
    # gaming predictors and mean_loo are calibration controls, never methods of the benchmark
    methods = set(pd.read_parquet(calibrated.path / "results" / "metrics.parquet")["method"])
    stats = set(pd.read_parquet(calibrated.path / "results" / "stats" / "all.parquet")["method"])
    assert not (set(GAMING_PREDICTORS) | {"mean_loo"}) & (methods | stats)
    scores = pd.read_parquet(res / "calibrated_scores.parquet")
    assert set(scores["method"]) == methods


def test_gaming_predictors_lose_to_the_positive_control_on_every_trusted_metric(calibrated):
    """On the simulator, a metric pertcal trusts ranks the positive control above every gaming predictor: a paired
    one-sided Wilcoxon (scipy) over the perturbations, not the statistic the trust table was built from."""
    res = calibrated.path / "results"
    trust = pd.read_csv(res / "calibration" / "trust.csv")
    trusted = trust[trust["trustworthy"]]
    assert len(trusted) >= 2, trust[["dataset", "metric", "mean_drf", "ci_low", "p_bds", "gamed_by"]]
    higher = metric_specs().set_index("metric")["higher_is_better"]
    for dataset, group in trusted.groupby("dataset"):
        wide = _scores(res, dataset).pivot_table(
            index=["task", "fold", "perturbation"], columns=["metric", "method"], values="value", dropna=False
        )
        for metric in group["metric"]:
            for predictor in GAMING_PREDICTORS:
                pair = wide[metric][["interpolated_duplicate", predictor]].dropna()
                better = pair["interpolated_duplicate"] - pair[predictor]
                if not higher[metric]:
                    better = -better
                p = scipy.stats.wilcoxon(better, alternative="greater").pvalue
                assert better.mean() > 0 and p < 0.05, (dataset, metric, predictor, better.mean(), p)


def test_deg_sensitivity_on_simulated_truth(calibrated):
    res = calibrated.path / "results" / "calibration"
    degs = pd.read_csv(res / "deg_sensitivity_degs.csv").set_index(["dataset", "deg_test", "deg_alpha"])
    gwps = degs.loc["sim_gwps"]
    # plain Welch against the pooled rest calls more DEGs, and fewer of them are real, than overestim_var
    assert gwps.loc[("welch", 0.05), "mean_degs"] > gwps.loc[("overestim_var", 0.05), "mean_degs"]
    assert gwps.loc[("welch", 0.05), "precision"] < gwps.loc[("overestim_var", 0.05), "precision"]
    # a stricter threshold calls no more DEGs
    assert gwps.loc[("overestim_var", 0.01), "mean_degs"] <= gwps.loc[("overestim_var", 0.05), "mean_degs"]
    # the rank-sum test on the cells calls far fewer false DEGs than plain Welch (0.94 vs 0.23 when measured)
    assert gwps.loc[("wilcoxon", 0.05), "precision"] > 2 * gwps.loc[("welch", 0.05), "precision"]
    assert gwps.loc[("wilcoxon", 0.01), "mean_degs"] <= gwps.loc[("wilcoxon", 0.05), "mean_degs"]
    # its matrices test the same perturbations as the pipeline's, the td rest with controls on sim_wessels included
    for dataset in ("sim_gwps", "sim_wessels"):
        for half in ("gt", "td"):
            ranked = ad.read_h5ad(res.parent / dataset / "calibration" / f"degs_wilcoxon_{half}.h5ad")
            pipeline = ad.read_h5ad(res.parent / dataset / f"degs_{half}.h5ad")
            assert list(ranked.obs_names) == list(pipeline.obs_names)
            assert list(ranked.var_names) == list(pipeline.var_names)
    drf = pd.read_parquet(res / "deg_sensitivity_drf.parquet")
    assert set(drf["deg_test"]) == {"overestim_var", "welch", "wilcoxon"} and drf["mean_drf"].between(-1, 1).all()


def test_calibration_tables_are_deterministic(calibrated):
    res = calibrated.path / "results" / "calibration"
    before = {name: (res / name).read_bytes() for name in TABLES}
    calibrated.run(f"results/calibration/{TABLES[0]}", "--forcerun", "calibrate_metrics", "-c1", config=SMALL)
    assert {name: (res / name).read_bytes() for name in TABLES} == before
