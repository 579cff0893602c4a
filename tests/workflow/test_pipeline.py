"""The data and calibration stages end to end on simulated data, run by Snakemake as a user runs it."""

from __future__ import annotations

import json
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from conftest import SMALL_DEMO as SMALL, SMALL_DEMO_TARGETS as TARGETS
from pertcal.metrics import panel_metrics

pytestmark = pytest.mark.workflow

@pytest.fixture(scope="module")
def small_run(small_demo):
    return small_demo


def planned_jobs(dry_run_stdout: str) -> list[tuple[str, str]]:
    """(rule, dataset) of every job in a dry-run plan."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if m:
            ds = re.search(r"wildcards:.*?dataset=(\w+)", block)
            jobs.append((m.group(1), ds.group(1) if ds else ""))
    return jobs


def test_outputs_complete_and_consistent(small_run):
    res = small_run.path / "results"
    metrics = pd.read_parquet(res / "metrics.parquet")
    assert list(metrics.columns) == ["dataset", "task", "fold", "method", "perturbation", "metric", "value"]
    assert set(metrics["metric"]) == set(panel_metrics())  # the default panel: the paper's 13
    got = metrics.groupby(["dataset", "task"])["method"].agg(lambda m: set(m)).to_dict()
    base = {"control", "mean", "technical_duplicate", "interpolated_duplicate", "crispr_informed_mean"}
    assert got == {("sim_gwps", "single"): base | {"linear"}, ("sim_wessels", "combo"): base | {"additive"}}
    # every test perturbation is scored exactly once per method and metric
    folds = pd.read_parquet(res / "sim_gwps" / "folds_single.parquet")
    tests = folds[folds["split"] == "test"]
    mean_rows = metrics[(metrics.dataset == "sim_gwps") & (metrics.method == "mean") & (metrics.metric == "mse")]
    assert sorted(mean_rows["perturbation"]) == sorted(tests["perturbation"])

    drf = pd.read_parquet(res / "calibration" / "drf.parquet")
    assert drf["drf"].between(-1, 1).all() and set(drf["positive_control"]) == {
        "interpolated_duplicate",
        "technical_duplicate",
    }
    # NIR reaches the calibration table (the published calibration script never computed it)
    assert "nir" in set(drf["metric"])
    summary = pd.read_csv(res / "summary.csv")
    assert list(summary["dataset"]) == ["sim_gwps", "sim_wessels"]
    processed = ad.read_h5ad(res / "sim_gwps" / "processed.h5ad", backed="r")
    row = summary.set_index("dataset").loc["sim_gwps"]
    assert row["n_cells"] == processed.n_obs and row["n_genes"] == processed.n_vars


def test_prediction_files_share_one_format(small_run):
    res = small_run.path / "results" / "sim_wessels"
    genes = list(ad.read_h5ad(res / "processed.h5ad", backed="r").var_names)
    folds = pd.read_parquet(res / "folds_combo.parquet")
    test = folds[(folds.fold == 1) & (folds.split == "test")]["perturbation"].tolist()
    for method in ["mean", "interpolated_duplicate", "additive"]:
        pred = ad.read_h5ad(res / "predictions" / "combo" / "fold1" / f"{method}.h5ad")
        assert list(pred.obs_names) == test and list(pred.var_names) == genes
        assert pred.X.dtype == np.float64 and pred.uns["method"] == method


def test_calibration_summary_on_simulated_truth(small_run):
    summary = json.loads((small_run.path / "results" / "calibration" / "summary.json").read_text())
    for ds in ["sim_gwps", "sim_wessels"]:
        rec = summary["datasets"][ds]["deg_recovery"]
        # called DEGs are mostly true simulated effects
        assert rec["n_called"] > 0 and rec["precision"] > 0.8
    assert summary["checks"]["interpolated_at_least_technical_duplicate_on_mse"]


def test_gsea_self_enrichment_finds_the_simulated_targets(small_run):
    res = small_run.path / "results"
    table = pd.read_parquet(res / "sim_wessels" / "gsea_self_enrichment.parquet")
    assert list(table.columns) == ["task", "fold", "method", "perturbation", "gene_set", "set_size", "es", "nes",
                                   "pval", "fdr"]
    assert set(table["method"]) == {"gt_half", "mean", "technical_duplicate", "interpolated_duplicate", "additive",
                                    "crispr_informed_mean"}  # the control's Δ is 0: not ranked
    # combos A+B are tested against the simulated target set of A and of B
    gt = table[(table["method"] == "gt_half") & table["nes"].notna()]
    assert (gt["perturbation"].str.split("+").apply(len) == 2).all()
    assert all(s in p.split("+") for p, s in zip(gt["perturbation"], gt["gene_set"]))
    # the observed response enriches a simulated single regulator's true targets (sim_wessels' sets mix up- and
    # down-regulated genes, which a signed ranking enriches less)
    singles = pd.read_parquet(res / "sim_gwps" / "gsea_self_enrichment.parquet")
    observed = singles[(singles["method"] == "gt_half") & singles["nes"].notna()]
    assert len(observed) >= 8 and (observed["fdr"] < 0.05).mean() > 0.8, observed
    assert (res / "figures" / "gsea_self_enrichment.png").stat().st_size > 10_000
    summary = pd.read_csv(res / "tables" / "gsea_self_enrichment.csv")
    assert set(summary["dataset"]) == {"sim_gwps", "sim_wessels"}


def test_rerun_after_full_run_is_empty_and_one_dataset_edit_reruns_only_it(small_run):
    plan = small_run.run("-n", *TARGETS, config=SMALL).stdout
    assert planned_jobs(plan) == [], plan[-2000:]
    edited = {**SMALL, "datasets": {"sim_gwps": {"processing": {"n_hvg": 700}}}}
    jobs = planned_jobs(small_run.run("-n", *TARGETS, config=edited).stdout)
    datasets = {ds for _, ds in jobs}
    assert datasets == {"sim_gwps", ""}, jobs
    assert ("preprocess_dataset", "sim_gwps") in jobs


def test_td_rest_option_reruns_only_the_td_deg_test_and_what_reads_it(small_run):
    # sim_wessels mirrors wessels23's published recipe (controls in the td rest); switching it off is a param change
    edited = {**SMALL, "datasets": {"sim_wessels": {"processing": {"td_rest_includes_controls": False}}}}
    plan = small_run.run("-n", *TARGETS, config=edited).stdout
    jobs = planned_jobs(plan)
    assert {ds for _, ds in jobs} == {"sim_wessels", ""}, jobs
    rules = {rule for rule, _ in jobs}
    assert "test_degs" in rules and not rules & {"preprocess_dataset", "split_halves", "reduce_cells", "assign_folds"}
    degs_jobs = re.findall(r"rule test_degs:.*?wildcards: ([^\n]+)", plan, re.S)
    assert degs_jobs == ["dataset=sim_wessels, half=td"], degs_jobs
    # of the baselines only the interpolated duplicate reads the td test
    predicted = re.findall(r"rule predict_baseline:.*?wildcards: [^\n]*method=(\w+)", plan, re.S)
    assert predicted and set(predicted) == {"interpolated_duplicate"}, predicted


def test_changing_metric_panels_reruns_only_scoring_and_what_follows(small_run):
    config = {**SMALL, "metrics": ["paper", "cell_eval", "perturbench", "systema"]}
    rules = {rule for rule, _ in planned_jobs(small_run.run("-n", *TARGETS, config=config).stdout)}
    assert {"score_metrics", "collect_dataset_metrics", "compute_drf"} <= rules, rules
    upstream = {"simulate_dataset", "preprocess_dataset", "split_halves", "assign_folds", "reduce_cells", "test_degs",
                "predict_baseline", "train_model", "predict_model"}
    assert not rules & upstream, rules


def test_gene_spaces_panel_makes_its_spaces_only_when_selected(small_run, make_workflow):
    scored = "results/sim_wessels/metrics/combo/fold0/mean.parquet"
    assert not (small_run.path / "results" / "sim_wessels" / "hvgs.parquet").exists()  # not made for [paper]
    wf = make_workflow("spaces")
    wf.replace_config(models={})
    wf.copy_results_of(small_run)
    config = {**SMALL, "metrics": ["paper", "gene_spaces"], "gene_spaces": {"n_hvgs": 100, "n_pcs": 5}}
    wf.run(scored, "-c2", config=config)
    res = wf.path / "results" / "sim_wessels"
    hvgs, pcs = pd.read_parquet(res / "hvgs.parquet"), ad.read_h5ad(res / "pcs.h5ad")
    assert hvgs["highly_variable"].sum() == 100 and pcs.n_obs == 5
    assert list(hvgs["gene"]) == list(pcs.var_names) == list(ad.read_h5ad(res / "stats.h5ad", backed="r").var_names)
    values = pd.read_parquet(wf.path / scored).pivot(index="perturbation", columns="metric", values="value")
    assert set(values.columns) == set(panel_metrics(["paper", "gene_spaces"]))
    spaces = ["pearson_deltactrl_hvg", "mse_hvg", "pearson_deltactrl_pcs", "mse_pcs"]
    assert values[spaces].notna().all().all() and (values["mse_hvg"] != values["mse"]).all()
    before = {f: (res / f).read_bytes() for f in ("hvgs.parquet", "pcs.h5ad")}
    wf.run(scored, "-c2", "--forcerun", "select_hvgs", "compute_pcs", config=config)
    assert before == {f: (res / f).read_bytes() for f in before}


def test_single_dataset_target_plans_only_that_dataset(workflow):
    jobs = planned_jobs(workflow.run("-n", "results/sim_essential/stats.h5ad").stdout)
    assert jobs and {ds for _, ds in jobs} == {"sim_essential"}
    assert {rule for rule, _ in jobs} == {"simulate_dataset", "preprocess_dataset", "split_halves", "reduce_cells"}


def test_tables_are_deterministic(small_run, make_workflow):
    again = make_workflow("again")
    again.replace_config(models={})
    scored = "sim_wessels/metrics/combo/fold0/interpolated_duplicate.parquet"
    again.run("results/sim_wessels/degs_gt.parquet", f"results/{scored}", "-c2", config=SMALL)
    for rel in [
        "sim_wessels/halves.parquet",
        "sim_wessels/folds_combo.parquet",
        "sim_wessels/stats.h5ad",
        "sim_wessels/degs_td.parquet",
        "sim_wessels/predictions/combo/fold0/interpolated_duplicate.h5ad",
        scored,
    ]:
        assert (small_run.path / "results" / rel).read_bytes() == (again.path / "results" / rel).read_bytes(), rel
