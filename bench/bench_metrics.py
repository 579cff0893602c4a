"""Speed of pertcal.metrics: the paper's 13 metrics vs a per-perturbation scipy/sklearn loop, and the other panels
vs the peer package cell-eval 0.8.2 on the same data.

Part 1 scores one method's predictions for all perturbations at once, then scores a subset with the loop
(scipy.stats.pearsonr, sklearn r2_score, numpy, scipy cdist for NIR) and extrapolates its time per perturbation.
Part 2 times every panel (`score_predictions(panels=...)`), then cell-eval's own pseudobulk metric functions
(pearson_delta, mse, mae, mse_delta, mae_delta, discrimination_score_l1/l2/cosine) on one "cell" per mean profile
against pertcal's same metrics, asserting identical values (rtol 1e-12; discrimination ranks exactly).

    python bench/bench_metrics.py                                     # 2,000 perturbations × 8,192 genes
    python bench/bench_metrics.py --perts 200 --genes 1000            # quick run
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import stats as sps
from scipy.spatial.distance import cdist
from sklearn.metrics import r2_score

from pertcal.metrics import MIN_DEGS, PANELS, make_fold, panel_metrics, score_fold_metrics, score_predictions

PAPER = panel_metrics(["paper"])
PEER_METRICS = ["pearson_delta", "mse", "mae", "mse_delta", "mae_delta", "discrimination_score_l1",
                "discrimination_score_l2", "discrimination_score_cosine"]


def simulate_fold(n_perts: int, n_genes: int, seed: int):
    """Predictions, truths, control, mean baseline, DEG weights and mask shaped like one fold of one method."""
    rng = np.random.default_rng(seed)
    control = rng.gamma(0.5, 1.0, n_genes)
    effect = rng.normal(0.0, 0.3, (n_perts, n_genes)) * (rng.random((n_perts, n_genes)) < 0.1)
    truth = control + effect + rng.normal(0.0, 0.05, (n_perts, n_genes))
    mean = truth.mean(axis=0)
    pred = mean + 0.5 * effect + rng.normal(0.0, 0.05, (n_perts, n_genes))
    weights = rng.random((n_perts, n_genes)) ** 4
    deg_mask = np.abs(effect) > 0.3
    return pred, truth, control, mean, weights, deg_mask


def reference_loop(rows, pred, truth, control, mean, weights, deg_mask) -> np.ndarray:
    """(len(rows), 13) metric values, one perturbation and one metric at a time."""
    out = []
    for i in rows:
        p, t, w, m = pred[i], truth[i], weights[i], deg_mask[i]
        enough = m.sum() >= MIN_DEGS
        values = {"mse": np.mean((p - t) ** 2), "wmse": np.sum(w * (p - t) ** 2) / np.sum(w)}
        for name, ref in (("deltactrl", control), ("deltapert", mean)):
            dp, dt = p - ref, t - ref
            values[f"pearson_{name}"] = sps.pearsonr(dp, dt).statistic
            values[f"pearson_{name}_degs"] = sps.pearsonr(dp[m], dt[m]).statistic if enough else np.nan
            values[f"r2_{name}"] = r2_score(dt, dp)
            values[f"r2_{name}_degs"] = r2_score(dt[m], dp[m]) if enough else np.nan
            values[f"weighted_r2_{name}"] = r2_score(dt, dp, sample_weight=w)
        d = cdist(p[None, :], truth)[0]
        values["nir"] = np.sum(d[i] < d) / (len(truth) - 1)  # j = i never counts: d[i] < d[i] is False
        out.append([values[k] for k in PAPER])
    return np.array(out)


def timed(fn):
    """(result, wall seconds, CPU seconds of all threads): on a shared machine the wall clock measures the neighbours too."""
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def paper_vs_loop(fold, names, subset: int) -> None:
    """Part 1: the paper's 13 metrics vs the scipy/sklearn loop on a subset, extrapolated."""
    P = len(names)
    print(f"perturbations {P:,} × genes {fold[0].shape[1]:,}, {len(PAPER)} metrics")
    ours, wall, cpu = timed(lambda: score_predictions(*fold, names))
    print(f"ours:      {wall:.2f} s wall, {cpu:.2f} s CPU for all {P:,} perturbations")
    rows = np.linspace(0, P - 1, min(subset, P)).astype(int)
    ref, ref_wall, ref_cpu = timed(lambda: reference_loop(rows, *fold))
    scale = P / len(rows)
    ref_wall, ref_cpu = ref_wall * scale, ref_cpu * scale
    print(f"reference: {ref_wall:.1f} s wall, {ref_cpu:.1f} s CPU extrapolated from {len(rows)} to all perturbations")
    print(f"speed ratio (reference / ours): {ref_wall / wall:.1f}× wall, {ref_cpu / cpu:.1f}× CPU")
    got = ours["value"].to_numpy().reshape(P, len(PAPER))[rows]
    diff = np.abs(got - ref)
    print(f"max abs diff over {len(rows)} perturbations: {np.nanmax(diff):.3g}; NaN pattern equal: "
          f"{bool(np.array_equal(np.isnan(got), np.isnan(ref)))}")
    for k, name in enumerate(PAPER):
        print(f"  {name:24s} max abs diff {np.nanmax(diff[:, k]) if np.isfinite(diff[:, k]).any() else float('nan'):.3g}")


def cell_eval_pair(pred, truth, control, names, genes):
    """cell-eval's input for mean profiles: one cell per perturbation (its profile) and one control cell."""
    import anndata as ad
    import pandas as pd
    from cell_eval._types import PerturbationAnndataPair

    obs = pd.DataFrame({"target": [*names, "ctrl"]}, index=[f"c{i}" for i in range(len(names) + 1)])
    var = pd.DataFrame(index=genes)
    real = ad.AnnData(np.vstack([truth, control]), obs=obs, var=var)
    predicted = ad.AnnData(np.vstack([pred, control]), obs=obs.copy(), var=var)
    return PerturbationAnndataPair(real=real, pred=predicted, pert_col="target", control_pert="ctrl")


def panels_vs_cell_eval(fold, seed: int) -> None:
    """Part 2: every panel's scoring time, then cell-eval's pseudobulk metrics vs pertcal's on the same data."""
    from functools import partial

    from cell_eval import metrics as ce

    pred, truth, control, mean, weights, deg_mask = fold
    P, G = truth.shape
    # Perturbations named after the first P genes, so cell-eval excludes the same target gene as pertcal.
    genes = np.array([f"g{j:05d}" for j in range(G)])
    names = list(genes[:P])
    rng = np.random.default_rng(seed + 1)
    extra = dict(scores=np.where(deg_mask, 5.0, 0.5) * rng.normal(size=(P, G)), targets=np.eye(P, G, dtype=bool),
                 train_means=truth[rng.permutation(P)[: P // 2]] + rng.normal(0, 0.05, (P // 2, G)),
                 # the gene_spaces panel's dataset-wide spaces, sized as configured: 2,000 HVGs, 10 orthonormal axes
                 hvg=rng.permutation(G) < 2000, loadings=np.linalg.qr(rng.normal(size=(G, 10)))[0].T)
    panels = [p for p in PANELS if p != "paper"]
    # Compile (or load) the numba L1 kernel before timing.
    score_fold_metrics(make_fold(pred[:4], truth[:4], control, mean, weights[:4], deg_mask[:4]), ["discrimination_score_l1"])
    for panel in panels:
        table, wall, cpu = timed(lambda: score_predictions(*fold, names, panels=[panel], **extra))
        print(f"panel {panel:12s} {table['metric'].nunique():2d} metrics: {wall:6.2f} s wall, {cpu:6.2f} s CPU")
    _, wall, cpu = timed(lambda: score_predictions(*fold, names, panels=PANELS, **extra))
    print(f"all panels   {len(panel_metrics(PANELS)):2d} metrics: {wall:6.2f} s wall, {cpu:6.2f} s CPU")

    theirs_fn = {"pearson_delta": ce.pearson_delta, "mse": ce.mse, "mae": ce.mae, "mse_delta": ce.mse_delta,
                 "mae_delta": ce.mae_delta,
                 **{f"discrimination_score_{d}": partial(ce.discrimination_score, metric=d) for d in ("l1", "l2", "cosine")}}
    pertcal_fold = make_fold(pred, truth, control, mean, weights, deg_mask, targets=extra["targets"])
    ours, wall, cpu = timed(lambda: score_fold_metrics(pertcal_fold, PEER_METRICS))
    print(f"\ncell-eval's pseudobulk metrics ({', '.join(PEER_METRICS)}):")
    print(f"ours:      {wall:.2f} s wall, {cpu:.2f} s CPU")
    pair, pair_wall, pair_cpu = timed(lambda: cell_eval_pair(pred, truth, control, names, genes))
    total_wall, total_cpu = pair_wall, pair_cpu
    for k, name in enumerate(PEER_METRICS):
        result, w, c = timed(lambda: theirs_fn[name](pair))
        total_wall, total_cpu = total_wall + w, total_cpu + c
        theirs = np.array([result[n] for n in names])  # cell-eval returns {perturbation: value}
        if name.startswith("discrimination"):
            assert np.array_equal(ours[:, k], theirs), f"{name}: values differ"
        else:
            np.testing.assert_allclose(ours[:, k], theirs, rtol=1e-12, atol=1e-15, err_msg=name)
        print(f"  cell-eval {name:28s} {w:7.1f} s wall, {c:7.1f} s CPU; values identical")
    print(f"cell-eval: {total_wall:.1f} s wall, {total_cpu:.1f} s CPU (pseudobulk of the pair included: "
          f"{pair_wall:.1f} s wall)")
    print(f"speed ratio (cell-eval / ours): {total_wall / wall:.1f}× wall, {total_cpu / cpu:.1f}× CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perts", type=int, default=2_000)
    parser.add_argument("--genes", type=int, default=8_192)
    parser.add_argument("--subset", type=int, default=50, help="perturbations scored by the reference loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-paper", action="store_true", help="only part 2 (panels vs cell-eval)")
    args = parser.parse_args()

    fold = simulate_fold(args.perts, args.genes, args.seed)
    if not args.skip_paper:
        paper_vs_loop(fold, [f"P{i:05d}" for i in range(args.perts)], args.subset)
        print()
    panels_vs_cell_eval(fold, args.seed)


if __name__ == "__main__":
    main()
