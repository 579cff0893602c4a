"""Speed of per-half DEGs from sufficient statistics vs scanpy's rank_genes_groups on the cells.

Ours: one sparse indicator-matrix product reduces cells to (n, Σx, Σx²) per (perturbation, half), written as
stats.h5ad (the reduce_cells stage); then the test_degs stage exactly as its rule runs it: read the half's rows of
stats.h5ad, pertcal.degs.test_degs block by block, write the long parquet (row group by row group) and the matrix
h5ad. Reference: sc.tl.rank_genes_groups(method='t-test_overestim_var') on the same half's cells of the tested
perturbations (in memory, nothing written). Prints both times, the ratios (of the test_degs stage, and of the
reduction plus the stage) and the largest differences between our parquet and scanpy's result.

    python bench/bench_degs.py                                        # 40,000 cells × 4,000 genes × 1,000 perturbations
    python bench/bench_degs.py --cells 4000 --genes 500 --perts 100   # quick run
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from pertcal.degs import DEG_SCHEMA, test_degs
from pertcal.io import parquet_writer, read_rows, write_h5ad


def simulate_cells(n_cells: int, n_genes: int, n_perts: int, seed: int) -> ad.AnnData:
    """Sparse log1p-normalized-like cells (CSR float32) with obs `perturbation` (incl. `control`) and `half`."""
    rng = np.random.default_rng(seed)
    labels = np.array(["control"] + [f"P{i:04d}" for i in range(n_perts)])
    # A control share like a CRISPR screen's, the rest spread evenly over the perturbations.
    group = np.where(rng.random(n_cells) < 0.1, 0, rng.integers(1, n_perts + 1, n_cells))
    rate = rng.gamma(0.3, 1.0, n_genes)
    effect = np.exp(rng.normal(0.0, 0.5, (n_perts + 1, n_genes)) * (rng.random((n_perts + 1, n_genes)) < 0.05))
    size = rng.lognormal(0.0, 0.3, n_cells)
    blocks = []
    for start in range(0, n_cells, 2000):
        stop = min(start + 2000, n_cells)
        counts = rng.poisson(rate * effect[group[start:stop]]).astype(np.float32)
        blocks.append(sp.csr_matrix(np.log1p(counts * size[start:stop, None].astype(np.float32))))
    obs = pd.DataFrame(
        {"perturbation": labels[group], "half": np.where(rng.random(n_cells) < 0.5, "gt", "td")},
        index=[f"c{i}" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.vstack(blocks, format="csr"), obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))


def reduce_to_stats(adata: ad.AnnData) -> ad.AnnData:
    """stats.h5ad-shaped AnnData: (n, Σx, Σx²) per (perturbation, half) by one sparse indicator product each."""
    key = adata.obs["perturbation"].astype(str) + "|" + adata.obs["half"].astype(str)
    codes, groups = pd.factorize(key, sort=True)
    indicator = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(len(groups), len(codes)))
    x = adata.X.astype(np.float64)
    sums = (indicator @ x).toarray()
    x.data **= 2
    sumsqs = (indicator @ x).toarray()
    obs = pd.DataFrame(
        {"perturbation": [g.split("|")[0] for g in groups], "half": [g.split("|")[1] for g in groups]}, index=groups
    )
    obs["n_cells"] = np.bincount(codes, minlength=len(groups))
    obs["is_control"] = obs["perturbation"] == "control"
    stats = ad.AnnData(X=sums / obs["n_cells"].to_numpy()[:, None], obs=obs, var=adata.var[[]])
    stats.layers["sum"], stats.layers["sumsq"] = sums, sumsqs
    return stats


def scanpy_degs(adata: ad.AnnData, half: str, tested: list[str]) -> pd.DataFrame:
    """scanpy's t-test_overestim_var of each tested perturbation vs the rest of the half's tested cells."""
    cells = adata[(adata.obs["half"] == half).to_numpy() & adata.obs["perturbation"].isin(tested).to_numpy()].copy()
    cells.obs["perturbation"] = pd.Categorical(cells.obs["perturbation"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        sc.tl.rank_genes_groups(
            cells, "perturbation", groups=tested, reference="rest", method="t-test_overestim_var",
            n_genes=cells.n_vars, corr_method="benjamini-hochberg",
        )
    return sc.get.rank_genes_groups_df(cells, group=None).rename(columns={"group": "perturbation", "names": "gene"})


def max_diff(ours: pd.Series, ref: pd.Series) -> tuple[float, float]:
    """Largest absolute and relative (to |ref|, over nonzero ref) difference."""
    a, b = ours.to_numpy(np.float64), ref.to_numpy(np.float64)
    nz = b != 0
    return float(np.max(np.abs(a - b))), float(np.max(np.abs(a - b)[nz] / np.abs(b[nz])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=40_000)
    parser.add_argument("--genes", type=int, default=4_000)
    parser.add_argument("--perts", type=int, default=1_000)
    parser.add_argument("--half", default="gt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    adata = simulate_cells(args.cells, args.genes, args.perts, args.seed)
    print(f"cells {adata.n_obs:,} × genes {adata.n_vars:,}, nnz {adata.X.nnz:,}, perturbations {args.perts:,}")

    # CPU seconds (all threads) beside wall seconds: on a shared machine the wall clock measures the neighbours too.
    w0, c0 = time.perf_counter(), time.process_time()
    stats = reduce_to_stats(adata)
    reduce_wall, reduce_cpu = time.perf_counter() - w0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        paths = {name: Path(tmp) / name for name in ("stats.h5ad", "degs.parquet", "degs.h5ad")}
        write_h5ad(stats, paths["stats.h5ad"])
        del stats
        # The test_degs stage, as scripts/test_degs.py runs it.
        w0, c0 = time.perf_counter(), time.process_time()
        half_stats = read_rows(paths["stats.h5ad"], where={"half": [args.half], "is_control": [False]}, layers=("sum", "sumsq"))
        with parquet_writer(paths["degs.parquet"], DEG_SCHEMA, statistics=["perturbation"]) as table:
            matrix = test_degs(half_stats, args.half, sink=table.write_table)
        write_h5ad(matrix, paths["degs.h5ad"])
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        ours = pd.read_parquet(paths["degs.parquet"])
    tested = list(matrix.obs_names)
    print(f"ours:   reduce {reduce_wall:.2f} s wall, {reduce_cpu:.2f} s CPU (both halves); test_degs stage (read, test, "
          f"write) {wall:.2f} s wall, {cpu:.2f} s CPU; {len(tested):,} tested")

    w0, c0 = time.perf_counter(), time.process_time()
    ref = scanpy_degs(adata, args.half, tested)
    ref_wall, ref_cpu = time.perf_counter() - w0, time.process_time() - c0
    print(f"scanpy: rank_genes_groups {ref_wall:.2f} s wall, {ref_cpu:.2f} s CPU")
    print(f"speed ratio (scanpy / test_degs stage): {ref_wall / wall:.1f}× wall, {ref_cpu / cpu:.1f}× CPU")
    print(f"speed ratio (scanpy / reduce + test_degs stage): {ref_wall / (reduce_wall + wall):.1f}× wall, "
          f"{ref_cpu / (reduce_cpu + cpu):.1f}× CPU")

    merged = ours.merge(ref, on=["perturbation", "gene"], validate="one_to_one")
    assert len(merged) == len(ours) == len(ref)
    for ours_col, ref_col in (("score", "scores"), ("pval", "pvals"), ("pval_adj", "pvals_adj"), ("logfc", "logfoldchanges")):
        abs_d, rel_d = max_diff(merged[ours_col], merged[ref_col])
        print(f"max diff {ours_col:8s}: abs {abs_d:.3g}, rel {rel_d:.3g}")


if __name__ == "__main__":
    main()
