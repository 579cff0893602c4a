"""Speed of pertcal.metrics.score_predictions vs a per-perturbation scipy/sklearn loop.

Scores one method's predictions for all perturbations at once, then scores a subset with the loop
(scipy.stats.pearsonr, sklearn r2_score, numpy, scipy cdist for NIR) and extrapolates its time per perturbation.

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

from pertcal.metrics import METRICS, MIN_DEGS, score_predictions


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
        out.append([values[k] for k in METRICS])
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perts", type=int, default=2_000)
    parser.add_argument("--genes", type=int, default=8_192)
    parser.add_argument("--subset", type=int, default=50, help="perturbations scored by the reference loop")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    fold = simulate_fold(args.perts, args.genes, args.seed)
    names = [f"P{i:05d}" for i in range(args.perts)]
    print(f"perturbations {args.perts:,} × genes {args.genes:,}, {len(METRICS)} metrics")

    # CPU seconds (all threads) beside wall seconds: on a shared machine the wall clock measures the neighbours too.
    w0, c0 = time.perf_counter(), time.process_time()
    ours = score_predictions(*fold, names)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"ours:      {wall:.2f} s wall, {cpu:.2f} s CPU for all {args.perts:,} perturbations")

    rows = np.linspace(0, args.perts - 1, min(args.subset, args.perts)).astype(int)
    w0, c0 = time.perf_counter(), time.process_time()
    ref = reference_loop(rows, *fold)
    scale = args.perts / len(rows)
    ref_wall, ref_cpu = (time.perf_counter() - w0) * scale, (time.process_time() - c0) * scale
    print(f"reference: {ref_wall:.1f} s wall, {ref_cpu:.1f} s CPU extrapolated from {len(rows)} to all perturbations")
    print(f"speed ratio (reference / ours): {ref_wall / wall:.1f}× wall, {ref_cpu / cpu:.1f}× CPU")

    got = ours["value"].to_numpy().reshape(args.perts, len(METRICS))[rows]
    diff = np.abs(got - ref)
    print(f"max abs diff over {len(rows)} perturbations: {np.nanmax(diff):.3g}; NaN pattern equal: "
          f"{bool(np.array_equal(np.isnan(got), np.isnan(ref)))}")
    for k, name in enumerate(METRICS):
        print(f"  {name:24s} max abs diff {np.nanmax(diff[:, k]) if np.isfinite(diff[:, k]).any() else float('nan'):.3g}")


if __name__ == "__main__":
    main()
