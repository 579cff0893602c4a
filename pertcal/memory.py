"""How much memory a stage's job declares (MB), and how much this machine has, so jobs are only run when they fit.

Each stage is bounded by one of these (docs/architecture.md, "Memory"): one chunk of cells read from disk
plus per-cell obs tables ("chunk"), that plus the (perturbation, half) × genes sums it accumulates ("reduce"), a
chunk plus the perturbations × genes tables it reads beside the cells ("chunk_tables": `input_mb` is then the size
of those tables only), obs alone ("obs"), or its perturbations × genes inputs and their working copies ("tables").
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_MB = 1500  # interpreter + scientific libraries + obs of ~2M cells
BYTES_PER_CHUNK_NONZERO = 64  # a chunk's float32/int32 arrays as read, as float64, and their per-stage temporaries
INPUT_COPIES = 1.5  # a table stage reads part of its inputs (rows, layers) and holds working copies and outputs
REDUCE_TABLES = 3  # Σx, Σx² and their mean, float64, per (perturbation, half) × gene
CGROUP_LIMIT = Path("/sys/fs/cgroup/memory.max")


def job_memory_mb(
    kind: str, *, chunk_nonzeros: int, input_mb: float, perturbations: int = 0, genes: int = 0, attempt: int = 1
) -> int:
    """Declared memory (MB) of a job of the given kind; a retried job asks for `attempt` times as much.

    `perturbations` and `genes` (control counted) size the sums of a "reduce" job: two halves each.
    """
    if kind in ("chunk", "reduce", "chunk_tables"):
        mb = BASE_MB + chunk_nonzeros * BYTES_PER_CHUNK_NONZERO / 2**20
        if kind == "reduce":
            mb += REDUCE_TABLES * 2 * perturbations * genes * 8 / 2**20
        elif kind == "chunk_tables":
            mb += INPUT_COPIES * input_mb
    elif kind == "obs":
        mb = BASE_MB
    elif kind == "tables":
        mb = max(BASE_MB, BASE_MB / 2 + INPUT_COPIES * input_mb)
    else:
        raise ValueError(f"unknown memory kind {kind!r}")
    return int(mb * attempt)


def machine_memory_mb() -> int:
    """Memory this process may use (MB): physical memory, or a cgroup limit below it, less 1 GB for Snakemake."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = CGROUP_LIMIT.read_text().strip()
        total = min(total, int(limit)) if limit.isdigit() else total
    except OSError:
        pass
    return int(total / 2**20) - 1024
