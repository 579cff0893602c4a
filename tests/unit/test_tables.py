"""pertcal.tables: mean ± SEM renderings, best method bolded, duplicates never "best"."""

import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from test_stats import synthetic_metrics

from pertcal import tables
from pertcal.metrics import panel_specs

METRICS = panel_specs()  # the paper's 13 metrics, the panel the per-dataset figures and tables show
from pertcal.stats import summarize_methods


@pytest.fixture(scope="module")
def summary():
    return summarize_methods(synthetic_metrics(per_fold=6), METRICS)


def test_format_mean_sem():
    assert tables.format_mean_sem(0.123456, 0.004567) == "0.123 ± 0.0046"
    assert tables.format_mean_sem(12.5, np.nan) == "12.5"
    assert tables.format_mean_sem(np.nan, 0.1) == tables.MISSING


def test_wide_cells_values_and_best(summary):
    cells, best = tables.wide_cells(summary, METRICS)
    assert list(cells.columns) == list(METRICS)
    assert list(cells.index[:4]) == ["control", "mean", "technical_duplicate", "interpolated_duplicate"]
    m = synthetic_metrics(per_fold=6).query("method == 'fmlp' and metric == 'mse'")["value"]
    assert cells.loc["fmlp", "mse"] == tables.format_mean_sem(m.mean(), scipy.stats.sem(m))
    # the mean baseline has no Pearson correlation on Δpert
    assert cells.loc["mean", "pearson_deltapert"] == tables.MISSING
    # one best per metric, never a duplicate although the duplicates score best in this table
    assert (best.sum(axis=0) == 1).all()
    assert not best.loc[["technical_duplicate", "interpolated_duplicate"]].any().any()
    assert best.loc["fmlp"].all()


def test_renderings_bold_exactly_the_best_cells(summary):
    title = "toy, single task"
    md = tables.to_markdown(summary, METRICS, title)
    body = [line for line in md.splitlines() if line.startswith("| fmlp")][0]
    assert body.count("**") == 2 * len(METRICS)
    dup = [line for line in md.splitlines() if line.startswith("| interpolated_duplicate")][0]
    assert "**" not in dup and tables.POSITIVE_MARK in dup
    assert "mse ↓" in md and "nir ↑" in md

    tex = tables.to_latex(summary, METRICS, title)
    assert tex.count(r"\textbf{") == len(METRICS)
    assert r"pearson\_deltactrl $\uparrow$" in tex and r"\pm" in tex and "±" not in tex
    assert tex.count(r"\\") == len(summary["method"].unique()) + 1

    html = tables.to_html(summary, METRICS, title)
    assert html.count("<b>") == len(METRICS)
    assert html.count("<tr>") == len(summary["method"].unique()) + 1
    assert "http" not in html  # standalone page, nothing fetched


def test_ties_are_all_bold():
    metrics = pd.DataFrame(
        [("d", "single", 0, m, p, "mse", v) for m, p, v in [("a", "P", 0.1), ("b", "P", 0.1), ("c", "P", 0.2)]],
        columns=["dataset", "task", "fold", "method", "perturbation", "metric", "value"],
    )
    _, best = tables.wide_cells(summarize_methods(metrics, METRICS), METRICS)
    assert best["mse"].to_dict() == {"a": True, "b": True, "c": False}


def test_dataset_summary_and_config_pages():
    summary = pd.DataFrame({"dataset": ["x"], "n_cells": [1200], "mean_degs": [3.25]})
    page = tables.dataset_summary_html(summary)
    assert re.search(r"<td>x</td><td>1200</td><td>3\.2</td>", page)
    page = tables.config_html("run: demo\nseed: 42\n<script>")
    assert "seed: 42" in page and "<script>" not in page


def test_dataset_summary_shows_embedding_coverage_as_percent_and_a_dash_where_no_model_reads_it():
    summary = pd.DataFrame({"dataset": ["a", "b"], "n_cells": [10, 20], "coverage_esm2": [0.5833, float("nan")]})
    page = tables.dataset_summary_html(summary)
    assert "<td>a</td><td>10</td><td>58.3%</td>" in page and "<td>b</td><td>20</td><td>–</td>" in page
    assert "coverage_&lt;source&gt;" in page

def test_trust_page_bolds_exactly_the_trusted_metrics():
    trust = pd.DataFrame({
        "dataset": ["a", "a", "b"], "panel": "paper", "metric": ["mse", "r2_deltactrl", "mse"], "n": 20,
        "mean_drf": [0.8, 0.8, 0.2], "ci_low": [0.7, 0.7, 0.1], "ci_high": [0.9, 0.9, 0.3], "censored": False,
        "bds": [1.0, 1.0, np.nan], "p_bds": [1e-4, 1e-4, np.nan], "gamed_by": ["", "global_shift", ""],
        "drf_identical_to": [None, "mse", None], "trustworthy": [True, False, False],
    })
    page = tables.trust_html(trust, min_drf=0.5, alpha=0.05, confidence=0.95)
    assert page.count("<caption>") == 2 and "r2_deltactrl (≡ mse)" in page and "global_shift" in page
    assert "<td><b>mse</b></td>" in page and "<td><b>r2_deltactrl" not in page
    assert page.count("<td><b>yes</b></td>") == 1 and "n/a" in page
