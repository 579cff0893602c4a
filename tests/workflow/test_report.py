"""The `benchmark` target and the HTML report, end to end on simulated data as a user runs them.

Runs two demo datasets (one single task, one combo task) to results/benchmark.done, builds
`snakemake --report results/report.html`, then checks the report's embedded results against the files on disk
and, where Chromium is installed, that the report renders in a headless browser.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import pandas as pd
import pytest

from pertcal.stats import POSITIVE_CONTROLS, STATS_COLUMNS

pytestmark = pytest.mark.workflow

DATASET_TASKS = [("sim_gwps", "single"), ("sim_wessels", "combo")]
CATEGORIES = {"Calibration", "Benchmark", "Datasets and configuration"}


def expected_figures() -> list[str]:
    """Every figure (without extension) the benchmark target makes for SMALL."""
    figures = ["results/drf_heatmap", "results/drf_heatmap_techdup", "results/drf_mse_vs_wmse", "results/figures/drf_vs_degs"]
    for ds, task in DATASET_TASKS:
        comparisons = ["negative_control"] + (["additive"] if task == "combo" else [])
        figures += [f"results/figures/{ds}/forest_{task}_vs_{c}" for c in comparisons]
        figures += [f"results/figures/{ds}/ideal_gap_{task}", f"results/figures/{ds}/controls_{task}"]
    return figures


@pytest.fixture(scope="module")
def report_run(small_demo):
    from conftest import SMALL_DEMO

    small_demo.run("results/benchmark.done", "--report", "results/report.html", config=SMALL_DEMO)
    return small_demo


@pytest.fixture(scope="module")
def report(report_run) -> dict:
    """The report's embedded tables: results, categories and the workflow description."""
    html = (report_run.path / "results" / "report.html").read_text(encoding="utf-8")

    def variable(script_id, name):
        # the data scripts, not the report's own JavaScript (which uses the same variable names)
        return json.loads(re.search(rf'<script id="{script_id}">\s*var {name} = (.*?);\s*</script>', html, re.S).group(1))

    return {
        "html": html,
        "results": variable("results", "results"),
        "categories": variable("categories", "categories"),
        "desc": variable("workflow-desc", "workflow_desc"),
    }


def test_benchmark_target_lists_existing_outputs(report_run):
    res = report_run.path
    listed = (res / "results" / "benchmark.done").read_text().split()
    for figure in expected_figures():
        assert f"{figure}.pdf" in listed and f"{figure}.png" in listed
        assert (res / f"{figure}.pdf").read_bytes()[:4] == b"%PDF"
        assert (res / f"{figure}.png").read_bytes()[:4] == b"\x89PNG"
    for ds, task in DATASET_TASKS:
        for ext in ("csv", "md", "tex", "html"):
            assert f"results/tables/{ds}_{task}.{ext}" in listed
    assert all((res / path).exists() for path in listed)


def test_stats_and_tables(report_run):
    res = report_run.path / "results"
    combined = pd.read_parquet(res / "stats" / "all.parquet")
    assert list(combined.columns) == STATS_COLUMNS
    parts = pd.concat([pd.read_parquet(res / "stats" / f"{ds}_{task}.parquet") for ds, task in DATASET_TASKS], ignore_index=True)
    pd.testing.assert_frame_equal(combined, parts)
    assert set(combined.query("dataset == 'sim_wessels'")["comparison"]) == {"negative_control", "additive"}
    assert set(combined.query("dataset == 'sim_gwps'")["comparison"]) == {"negative_control"}
    assert combined["p_t_bonferroni"].dropna().between(0, 1).all()
    for ds, task in DATASET_TASKS:
        table = pd.read_csv(res / "tables" / f"{ds}_{task}.csv")
        assert not table.loc[table["is_best"], "method"].isin(POSITIVE_CONTROLS).any()


def test_report_embeds_every_figure_and_table(report_run, report):
    results = report["results"]
    expected = {f"{f}.png" for f in expected_figures()}
    expected |= {f"results/tables/{ds}_{task}.html" for ds, task in DATASET_TASKS}
    expected |= {"results/tables/summary.html", "results/run_config.html"}
    assert set(results) == expected
    for path, entry in results.items():
        # self-contained: the file itself travels inside the HTML
        header, data = entry["data_uri"].split(",", 1)
        assert header.startswith(f"data:{entry['mime_type']};") and header.endswith(";base64")
        assert base64.b64decode(data) == (report_run.path / path).read_bytes()
        assert entry["caption"].strip(), f"{path} has no caption"
    assert set(report["categories"]) == CATEGORIES
    assert set(report["categories"]["Benchmark"]) == {f"{ds} ({task})" for ds, task in DATASET_TASKS}
    # captions are rendered with the run's configuration and wildcards
    caption = results["results/figures/sim_wessels/forest_combo_vs_additive.png"]["caption"]
    assert "sim_wessels" in caption and "1000 percentile resamples" in caption and "seed 42" in caption
    assert "Dynamic Range Fraction" in report["desc"]
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=\"https?:", report["html"])


def _browser():
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no Chromium to render the report headless")
def test_report_renders_in_a_headless_browser(report_run, tmp_path):
    page = (report_run.path / "results" / "report.html").as_uri()
    # a profile of its own: with a shared one, Chromium hands the page to an already running instance and waits
    browser = [_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path}"]
    dom = subprocess.run(
        [*browser, "--virtual-time-budget=20000", "--dump-dom", page], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    # the loading screen is hidden and the report's menu lists every category once the scripts have run
    assert re.search(r'<div id="loading-screen" style="display: none;?">', dom)
    app = dom[dom.index('<div id="app">') :]
    app = app[: app.index("<script")]
    for category in CATEGORIES:
        assert category in app
