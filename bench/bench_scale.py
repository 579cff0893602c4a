"""Memory and time of every stage on genome-wide-screen-shaped files, run through Snakemake one job at a time.

Writes GWPS-shaped raw counts (CSR, chunk by chunk: never whole in memory) for each size, runs the workflow on
them up to the DRF with the four controls as methods and the analyses that stream the cells again, samples the
resident memory of every job's process tree (psutil, every 0.2 s), and prints per stage wall time and peak RSS,
and the growth from the smallest to the largest size.

    python bench/bench_scale.py --cells 100000 250000 500000 --perts 9800 --nnz-per-cell 2500
    python bench/bench_scale.py --cells 20000 40000 --perts 500 --nnz-per-cell 300 --genes 2000   # quick run
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import scipy.sparse as sp
import yaml

from pertcal.cells import CsrWriter

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "scripts", "schemas", "profiles", "envs", "report", "containers")
# The DRF, and the two analyses that stream the cells again (dataset quality, perturbation strength and titration)
TARGETS = ["results/scale/drf.parquet", "results/scale/analyses/quality.json", "results/scale/analyses/titration.parquet"]
SCRIPT = re.compile(r"\.snakemake/scripts/tmp[^.]+\.(\w+)\.py")


def write_screen(path: Path, *, n_cells: int, n_perts: int, n_genes: int, nnz_per_cell: int, seed: int = 0) -> int:
    """GWPS-shaped counts: 5% control cells, detection rates log-normal over genes, ~nnz_per_cell nonzeros per cell,
    and each perturbation shifting 20 genes; written in chunks. Returns the number of nonzeros."""
    rng = np.random.default_rng(seed)
    code = np.where(rng.random(n_cells) < 0.05, n_perts, rng.integers(0, n_perts, n_cells))
    labels = np.array([f"P{c}" for c in range(n_perts)] + ["control"])[code]
    # target genes are named like perturbations so every perturbation's target is among the genes
    genes = np.array([f"P{j}" if j < n_perts else f"G{j}" for j in range(n_genes)])
    detect = rng.lognormal(0.0, 1.0, n_genes)
    detect = np.minimum(detect / detect.sum() * nnz_per_cell, 0.95)
    effect = np.ones((n_perts + 1, n_genes), dtype=np.float32)
    for p in range(n_perts):
        effect[p, rng.choice(n_genes, 20, replace=False)] = rng.choice([0.3, 3.0], 20)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"cell{i}" for i in range(n_cells)])
    writer = CsrWriter(path, obs=obs, var=pd.DataFrame(index=genes), uns={})
    nnz = 0
    for start in range(0, n_cells, 2000):
        stop = min(start + 2000, n_cells)
        p = np.minimum(detect * effect[code[start:stop]], 0.99)
        hit = rng.random(p.shape, dtype=np.float32) < p
        rows, cols = np.nonzero(hit)
        values = 1 + rng.poisson(2.0 * effect[code[start:stop]][rows, cols]).astype(np.float32)
        chunk = sp.csr_matrix((values, (rows, cols)), shape=(stop - start, n_genes), dtype=np.float32)
        writer.append(chunk)
        nnz += chunk.nnz
    writer.close()
    return nnz


class Sampler:
    """Peak RSS and wall time per Snakemake script (stage), from the process tree of the Snakemake run."""

    def __init__(self, root: psutil.Process):
        self.root, self.peak, self.first, self.last = root, defaultdict(int), {}, {}
        self.jobs = defaultdict(set)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for proc in children:
                try:
                    match = SCRIPT.search(" ".join(proc.cmdline()))
                    if not match:
                        continue
                    tree = [proc, *proc.children(recursive=True)]
                    rss = sum(p.memory_info().rss for p in tree)
                except psutil.Error:
                    continue
                stage = match.group(1)
                self.peak[stage] = max(self.peak[stage], rss)
                self.first.setdefault((stage, proc.pid), now)
                self.last[(stage, proc.pid)] = now
                self.jobs[stage].add(proc.pid)
            time.sleep(0.2)

    def stop(self) -> dict[str, dict]:
        self._stop.set()
        self._thread.join()
        out = {}
        for stage, pids in self.jobs.items():
            walls = [self.last[(stage, p)] - self.first[(stage, p)] for p in pids]
            out[stage] = {"jobs": len(pids), "max_wall_s": max(walls), "sum_wall_s": sum(walls),
                          "peak_rss_gib": self.peak[stage] / 2**30}
        return out


def run_size(work: Path, raw: Path, *, n_folds: int, cores: int, until: list[str], targets: list[str]) -> dict[str, dict]:
    """Copy the workflow to `work`, point a dataset at `raw`, run it to `targets` with one job at a time."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    overlay = {
        "run": ["scale"],
        "baselines": ["control", "mean", "technical_duplicate", "interpolated_duplicate"],
        "models": {},
        # keep every perturbation at every size (the smallest has ~10 cells each), so only cells per perturbation change
        "processing": {"n_folds_single": n_folds, "min_cells_per_perturbation": 2, "min_cells_degs": 2},
        "datasets": {"scale": {"source": {"path": str(raw)}, "modality": "CRISPRi", "cell_line": "K562 (bench)"}},
    }
    (work / "bench.yaml").write_text(yaml.safe_dump(overlay))
    cmd = [sys.executable, "-m", "snakemake", "-j1", f"--cores={cores}", "--configfile=bench.yaml",
           *targets, *(["--until", *until] if until else [])]
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(psutil.Process(proc.pid))
        code = proc.wait()
    stages = sampler.stop()
    if code:
        raise SystemExit(f"snakemake failed ({code}); see {work / 'snakemake.log'}")
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[100_000, 250_000, 500_000])
    ap.add_argument("--perts", type=int, default=9_800)
    ap.add_argument("--genes", type=int, default=8_248)
    ap.add_argument("--nnz-per-cell", type=int, default=2_500)
    ap.add_argument("--folds", type=int, default=2, help="single-task folds (each fold is 8 prediction/score jobs)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/pertcal-bench-scale"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--until", nargs="*", default=[], help="stop after these rules (Snakemake --until)")
    ap.add_argument("--targets", nargs="+", default=TARGETS, help="files to make (default: the DRF and the analyses)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n_cells in args.cells:
        raw = args.work / f"raw_{n_cells}.h5ad"
        t0 = time.monotonic()
        nnz = write_screen(raw, n_cells=n_cells, n_perts=args.perts, n_genes=args.genes, nnz_per_cell=args.nnz_per_cell)
        print(f"cells {n_cells:,}: wrote {nnz:,} nonzeros ({raw.stat().st_size / 2**30:.1f} GiB) in "
              f"{time.monotonic() - t0:.0f} s; load {os.getloadavg()[0]:.1f}", flush=True)
        stages = run_size(args.work / f"run_{n_cells}", raw, n_folds=args.folds, cores=args.cores, until=args.until,
                          targets=args.targets)
        for stage, s in stages.items():
            rows.append({"cells": n_cells, "nonzeros": nnz, "stage": stage, **s})
        raw.unlink()
        table = pd.DataFrame(rows)
        print(table[table["cells"] == n_cells].to_string(index=False, float_format=lambda v: f"{v:.2f}"), flush=True)
    table = pd.DataFrame(rows)
    print("\nper stage: peak RSS (GiB) and max job wall time (s) by cells")
    peak = table.pivot(index="stage", columns="cells", values="peak_rss_gib")
    wall = table.pivot(index="stage", columns="cells", values="max_wall_s")
    lo, hi = min(args.cells), max(args.cells)
    nnz = table.groupby("cells")["nonzeros"].first()
    summary = pd.DataFrame({
        **{f"rss {c:,}": peak[c] for c in args.cells},
        **{f"wall {c:,}": wall[c] for c in args.cells},
        "rss growth": peak[hi] / peak[lo],
        "wall growth": wall[hi] / wall[lo],
        "nonzeros growth": nnz[hi] / nnz[lo],
    })
    print(summary.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
