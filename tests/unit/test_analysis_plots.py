"""pertcal.analysis_plots: the analyses' figures render from small tables to PDF + PNG, byte-identical on a rerun."""

import numpy as np
import pandas as pd

from pertcal import analysis_plots
from pertcal.plots import save_figure
from pertcal.quality import drf_vs_quality
from pertcal.strength import binned_gene_errors, gene_error_table, stratum_order

EDGES = [0, 1e-5, 0.05, 1]
STRATA = [0, 1, 10]


def _render(fig, tmp_path, name):
    save_figure(fig, tmp_path / f"{name}.pdf", tmp_path / f"{name}.png")
    return (tmp_path / f"{name}.png").read_bytes()


def _tables(rng):
    mean_drf = pd.DataFrame({
        "dataset": np.repeat(["d1", "d2", "d3"], 2), "metric": ["mse", "wmse"] * 3, "mean_drf": rng.uniform(-1, 1, 6),
    })
    quality = pd.DataFrame({
        "dataset": ["d1", "d2", "d3"], "mean_edist": [1.0, 5.0, 3.0], "cv_degs": [0.5, 1.0, 2.0],
        "cv_cells": [0.1, 0.2, 0.3], "mean_degs": [3.0, 50.0, 10.0],
    })
    genes = []
    for dataset in ("d1", "d2"):
        truth, mean, dup = (rng.normal(size=(4, 30)) for _ in range(3))
        sums = binned_gene_errors(truth, mean, dup, rng.uniform(0, 1, (4, 30)) ** 4, EDGES).assign(task="single")
        genes.append(gene_error_table(sums, EDGES).assign(dataset=dataset))
    titration = pd.DataFrame([
        {"dataset": ds, "perturbation": f"p{k}", "stratum": s, "size": size, "repeat": r,
         "mse": rng.uniform(0.1, 1) / size, "mse_mean": 0.05, "mse_technical_duplicate": 0.02}
        for ds in ("d1", "d2") for k, s in enumerate(["0", "1–9"]) for size in (5, 10, 20) for r in range(3)
    ])
    return mean_drf, quality, pd.concat(genes, ignore_index=True), titration


def test_figures_render_and_are_reproducible(tmp_path):
    mean_drf, quality, genes, titration = _tables(np.random.default_rng(0))
    points, rho = drf_vs_quality(mean_drf, quality)
    figures = {
        "quality": lambda: analysis_plots.drf_vs_quality(points, rho, positive_control="interpolated_duplicate"),
        "genes": lambda: analysis_plots.gene_errors(genes),
        # "≥10" has no perturbations: its panel says so instead of failing
        "titration": lambda: analysis_plots.titration(titration, stratum_order(STRATA)),
    }
    for name, make in figures.items():
        first = _render(make(), tmp_path, name)
        assert first[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / f"{name}.pdf").stat().st_size > 0
        assert _render(make(), tmp_path, name) == first
