"""pertcal.plots: every figure renders from synthetic tables to PDF + PNG, reproducibly, with no overlapping text."""

import matplotlib.text
import numpy as np
import pandas as pd
import pytest
from test_stats import synthetic_drf, synthetic_metrics

from pertcal import plots, stats
from pertcal.metrics import panel_specs

METRICS = panel_specs()  # the paper's 13 metrics, the panel the per-dataset figures and tables show

# multi-panel figures are checked on a few metrics of both directions and reference kinds (one panel each),
# which keeps the test fast; the full 13-panel figures come out of the workflow test
FEW = {m: METRICS[m] for m in ("mse", "pearson_deltactrl", "pearson_deltapert", "r2_deltapert_degs", "nir")}


def _text_rectangle(text, renderer):
    """(4, 2) display-space corners of a text's drawn box, rotation included."""
    box = text.get_window_extent(renderer)
    angle = np.deg2rad(text.get_rotation())
    if angle:
        rotation = text.get_rotation()
        text.set_rotation(0)
        upright = text.get_window_extent(renderer)
        text.set_rotation(rotation)
        w, h = upright.width, upright.height
    else:
        w, h = box.width, box.height
    # the centre of a rotated rectangle is the centre of its axis-aligned bounding box
    centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    u, v = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    return np.array([centre + sx * w / 2 * u + sy * h / 2 * v for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def _separated(a, b, tolerance_px):
    """Separating-axis test for two convex quadrilaterals, allowing `tolerance_px` of overlap."""
    for quad in (a, b):
        for k in range(4):
            edge = quad[(k + 1) % 4] - quad[k]
            axis = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            pa, pb = a @ axis, b @ axis
            if min(pa.max(), pb.max()) - max(pa.min(), pb.min()) <= tolerance_px:
                return True
    return False


def _overlapping_texts(fig, tolerance_px=1.0):
    """Pairs of visible, non-empty texts whose drawn (rotated) boxes overlap by more than `tolerance_px`."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tick_labels = {id(t) for ax in fig.axes for axis in ax._axis_map.values() for tick in axis.get_major_ticks() + axis.get_minor_ticks() for t in (tick.label1, tick.label2)}
    # only the ticks inside the view limits are drawn (matplotlib keeps the others around, stale)
    drawn_ticks = [
        t
        for ax in fig.axes
        for axis in ax._axis_map.values()
        for tick in axis._update_ticks()
        for t in (tick.label1, tick.label2)
    ]
    texts = [t for t in fig.findobj(matplotlib.text.Text) if id(t) not in tick_labels] + drawn_ticks
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    boxes = np.array([t.get_window_extent(renderer).extents for t in texts])  # x0, y0, x1, y1
    dx = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    dy = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    # bounding boxes apart means texts apart; only the rest needs the exact (rotated) test
    candidates = zip(*np.nonzero(np.triu((dx > tolerance_px) & (dy > tolerance_px), k=1)))
    quads = {}
    overlaps = []
    for i, j in candidates:
        for k in (i, j):
            quads.setdefault(k, _text_rectangle(texts[k], renderer))
        if not _separated(quads[i], quads[j], tolerance_px):
            overlaps.append((texts[i].get_text(), texts[j].get_text()))
    return overlaps


def _check(fig, tmp_path, name):
    assert not _overlapping_texts(fig), _overlapping_texts(fig)[:5]
    for ax in fig.axes:
        if ax.get_visible() and ax.axison and (ax.has_data() or ax.images):
            assert ax.get_xlabel() or ax.get_ylabel() or ax.get_title(), "an axis without labels"
    assert fig._suptitle is not None and fig._suptitle.get_text()
    pdf, png = tmp_path / f"{name}.pdf", tmp_path / f"{name}.png"
    plots.save_figure(fig, pdf, png)
    assert pdf.read_bytes()[:4] == b"%PDF" and png.read_bytes()[:4] == b"\x89PNG"
    assert png.stat().st_size > 20_000
    return pdf, png


@pytest.fixture(scope="module")
def drf():
    return synthetic_drf()


@pytest.fixture(scope="module")
def summary():
    return pd.DataFrame({"dataset": ["weak", "strong", "tiny"], "mean_degs": [0.4, 85.0, 12.0]})


@pytest.fixture(scope="module")
def metrics():
    return synthetic_metrics(per_fold=6)


@pytest.fixture(scope="module")
def few_metrics(metrics):
    return metrics[metrics["metric"].isin(list(FEW))]


def test_drf_heatmap_renders_with_censored_cells(drf, summary, tmp_path):
    cells = stats.summarize_drf(drf, "interpolated_duplicate")
    fig = plots.drf_heatmap(cells, summary, list(METRICS), positive_control="interpolated_duplicate")
    heat = [ax for ax in fig.axes if ax.images][0]
    # datasets ordered weak → strong by mean DEGs; the censored `tiny` column is drawn as hatched patches
    assert [t.get_text() for t in heat.get_xticklabels()] == ["weak", "tiny", "strong"]
    hatched = [p for p in heat.patches if p.get_hatch()]
    assert len(hatched) == len(METRICS)
    assert {round(p.get_x() + 0.5) for p in hatched} == {1}
    assert any("censored" in t.get_text() for t in fig.legends[0].get_texts())
    _check(fig, tmp_path, "drf_heatmap")


def test_drf_mse_vs_wmse_renders_p_values(drf, tmp_path):
    tests = stats.compare_drf_mse_wmse(drf, "interpolated_duplicate")
    fig = plots.drf_mse_vs_wmse(drf, tests, ["weak", "tiny", "strong"], positive_control="interpolated_duplicate")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any("censored" in t for t in texts) and sum("p=" in t or "p<" in t for t in texts) == 2
    _check(fig, tmp_path, "drf_mse_vs_wmse")


def test_drf_vs_degs_renders(drf, tmp_path):
    counts = drf[["dataset", "perturbation"]].drop_duplicates().assign(n_degs=lambda d: np.arange(len(d)) % 50)
    fig = plots.drf_vs_degs(drf, counts, positive_control="interpolated_duplicate")
    assert [ax.get_title() for ax in fig.axes] == ["MSE", "WMSE"]
    _check(fig, tmp_path, "drf_vs_degs")


def test_forest_plot_orders_by_effect(few_metrics, tmp_path):
    result = stats.compare_methods(few_metrics, FEW, seed=0, n_resamples=200)
    fig = plots.forest_plot(result, FEW, "toy, single task: methods vs the negative control")
    panels = {ax.get_title(loc="left").split(" ")[0]: ax for ax in fig.axes if ax.get_title(loc="left")}
    assert set(panels) == set(FEW)
    # the best method is drawn at the top: the interpolated duplicate for an error and for a correlation
    for metric in ("mse", "pearson_deltactrl"):
        labels = [t.get_text() for t in panels[metric].get_yticklabels()]
        assert labels[-1] == "interpolated_duplicate" and labels[0] == "control"
    assert "left = better" in panels["mse"].get_xlabel() and "right = better" in panels["nir"].get_xlabel()
    _check(fig, tmp_path, "forest")


def test_empty_panels_say_why(few_metrics, tmp_path):
    # a dataset without perturbations of >= 3 DEGs has no DEG-restricted scores at all
    sparse = few_metrics.assign(value=few_metrics["value"].where(few_metrics["metric"] != "r2_deltapert_degs"))
    for fig in (
        plots.forest_plot(stats.compare_methods(sparse, FEW, seed=0, n_resamples=50), FEW, "toy: sparse"),
        plots.control_strips(sparse, stats.compare_controls(sparse, FEW), FEW, "toy: sparse"),
    ):
        empty = [ax for ax in fig.axes if ax.get_title(loc="left").startswith("r2_deltapert_degs") or ax.get_title().startswith("r2_deltapert_degs")]
        assert len(empty) == 1 and "no finite scores" in empty[0].texts[0].get_text()
        assert not _overlapping_texts(fig)


def test_ideal_gap_heatmap_renders(metrics, tmp_path):
    gap = stats.ideal_gap_closed(metrics, METRICS)
    fig = plots.ideal_gap_heatmap(gap, METRICS, "toy, single task: fraction of the ideal gap closed")
    ax = fig.axes[0]
    assert "(vs control)" in ax.get_xticklabels()[list(METRICS).index("pearson_deltapert")].get_text()
    assert "n/a" in [t.get_text() for t in ax.texts]
    assert "-0.00" not in [t.get_text() for t in ax.texts]
    _check(fig, tmp_path, "ideal_gap")


def test_control_strips_render(few_metrics, tmp_path):
    fig = plots.control_strips(few_metrics, stats.compare_controls(few_metrics, FEW), FEW, "toy, single task: controls")
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert len(titled) == len(FEW)
    assert all("p=" in t.get_text() or "p<" in t.get_text() for t in titled[0].get_xticklabels()[1:])
    _check(fig, tmp_path, "controls")


def test_figures_are_byte_reproducible(drf, summary, tmp_path):
    cells = stats.summarize_drf(drf[drf["metric"].isin(list(FEW))], "technical_duplicate")
    paths = []
    for k in range(2):
        fig = plots.drf_heatmap(cells, summary, list(FEW), positive_control="technical_duplicate")
        paths.append((tmp_path / f"{k}.pdf", tmp_path / f"{k}.png"))
        plots.save_figure(fig, *paths[-1])
    assert paths[0][0].read_bytes() == paths[1][0].read_bytes()
    assert paths[0][1].read_bytes() == paths[1][1].read_bytes()


def test_format_p():
    assert plots.format_p(0.0) == "p<1e-300"
    assert plots.format_p(0.0123) == "p=0.012"
    assert plots.format_p(3.2e-7) == "p=3.2e-07"
    assert plots.format_p(np.nan) == "p n/a"


# --- calibration of every metric (issue 12) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def panel_cells(drf):
    from pertcal.calibration import summarize_drf_ci
    from pertcal.metrics import metric_specs

    both = pd.concat([drf.assign(negative_control="mean"), drf.assign(negative_control="mean_loo", drf=drf["drf"] - 0.1)])
    specs = metric_specs()
    # a second panel, as the panels' registry will add: the same DRFs under other names
    specs = pd.concat([specs, specs.head(3).assign(metric=lambda s: "other_" + s["metric"], panel="other")])
    extra = both[both["metric"].isin(specs["metric"].head(3))].assign(metric=lambda t: "other_" + t["metric"])
    return summarize_drf_ci(pd.concat([both, extra]), specs, seed=0, n_resamples=200, confidence=0.95, min_perturbations=10)


def test_panel_drf_heatmap_facets_by_panel_and_marks_identities(panel_cells, summary, tmp_path):
    fig = plots.panel_drf_heatmap(panel_cells, summary, positive_control="interpolated_duplicate", negative_control="mean")
    heats = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in heats] == ["panel: paper", "panel: other"]
    labels = [t.get_text() for t in heats[0].get_yticklabels()]
    assert "r2_deltactrl ≡ mse" in labels and "weighted_r2_deltactrl ≡ wmse" in labels and "mse" in labels
    assert [t.get_text() for t in heats[-1].get_xticklabels()] == ["weak", "tiny", "strong"]
    # the censored dataset is hatched in every panel; the others show mean and CI
    assert all({round(p.get_x() + 0.5) for p in ax.patches if p.get_hatch()} == {1} for ax in heats)
    assert any("[" in t.get_text() for t in heats[0].texts)
    _check(fig, tmp_path, "panel_drf")


def test_drf_negative_controls_renders(panel_cells, tmp_path):
    fig = plots.drf_negative_controls(panel_cells, positive_control="interpolated_duplicate")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["mean", "mean_loo"]
    _check(fig, tmp_path, "drf_negative_controls")


def test_gameability_heatmap_renders(tmp_path):
    rng = np.random.default_rng(0)
    rows = [
        dict(dataset=ds, metric=m, predictor=p, gap_closed=rng.normal(0, 0.5), beats_negative=rng.random() < 0.2,
             beats_positive=rng.random() < 0.05)
        for ds in ("weak", "strong") for m in METRICS for p in ("inflated_delta_x2", "inflated_delta_x5", "random_delta",
                                                               "shuffled_truth", "global_shift", "double_log")
    ]
    fig = plots.gameability_heatmap(pd.DataFrame(rows))
    assert len(fig.axes[0].texts) == len(METRICS) * 6
    _check(fig, tmp_path, "gameability")


def test_deg_sensitivity_plot_renders(tmp_path):
    rng = np.random.default_rng(0)
    variants = [(t, a) for t in ("overestim_var", "welch", "wilcoxon") for a in (0.05, 0.01)]
    drf = pd.DataFrame([
        dict(dataset=ds, deg_test=t, deg_alpha=a, metric=m, positive_control="interpolated_duplicate", n=20,
             mean_drf=rng.uniform(-1, 1)) for ds in ("weak", "strong") for t, a in variants for m in METRICS
    ])
    degs = pd.DataFrame([dict(dataset=ds, deg_test=t, deg_alpha=a, mean_degs=rng.uniform(0, 30), precision=rng.random())
                         for ds in ("weak", "strong") for t, a in variants])
    fig = plots.deg_sensitivity_plot(drf, degs, positive_control="interpolated_duplicate")
    _check(fig, tmp_path, "deg_sensitivity")

def test_gsea_nes_renders_one_panel_per_dataset(tmp_path):
    rng = np.random.default_rng(0)
    methods = ["gt_half", "mean", "technical_duplicate", "interpolated_duplicate", "linear", "fmlp"]
    rows = [
        {"dataset": ds, "task": "single", "fold": 0, "method": m, "perturbation": f"G{i}", "gene_set": f"G{i}",
         "set_size": 20, "nes": rng.normal(1.5, 1.0), "fdr": rng.uniform(0, 0.2)}
        for ds in ("strong", "weak") for m in methods for i in range(15)
    ]
    # a dataset whose regulators' sets are all below the minimum size: listed, nothing tested
    rows.append({**rows[0], "dataset": "untested", "nes": np.nan, "fdr": np.nan})
    fig = plots.gsea_nes(pd.DataFrame(rows), alpha=0.05)
    titled = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title().split(" ")[0] for ax in titled] == ["strong", "weak", "untested"]
    assert [t.get_text() for t in titled[0].get_xticklabels()][:3] == ["gt half", "mean", "tech. dup."]
    assert "no perturbed regulator" in titled[2].texts[0].get_text()
    _check(fig, tmp_path, "gsea_nes")
