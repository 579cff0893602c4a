"""Declared memory: every job declares mem_mb, and Snakemake never runs together jobs whose memory does not fit."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from pertcal.memory import BASE_MB, BYTES_PER_CHUNK_NONZERO, job_memory_mb, machine_memory_mb

pytestmark = pytest.mark.workflow
PREPROCESS_MB = job_memory_mb("chunk", chunk_nonzeros=25_000_000, input_mb=0)
PREPROCESS_MB_EXACT = BASE_MB + 25_000_000 * BYTES_PER_CHUNK_NONZERO / 2**20


def test_memory_estimates_closed_form():
    assert PREPROCESS_MB == int(BASE_MB + 25_000_000 * BYTES_PER_CHUNK_NONZERO / 2**20)
    # the chunk budget, not the (huge) input, bounds a cell-streaming stage; a retry asks for twice as much
    assert job_memory_mb("chunk", chunk_nonzeros=25_000_000, input_mb=10**6, attempt=2) == int(
        2 * (BASE_MB + 25_000_000 * BYTES_PER_CHUNK_NONZERO / 2**20)
    )
    assert job_memory_mb("tables", chunk_nonzeros=0, input_mb=10_000) == int(BASE_MB / 2 + 1.5 * 10_000)
    # reduce: the chunk plus Σx, Σx² and means of 9,801 perturbations × 2 halves × 8,248 genes in float64
    assert job_memory_mb("reduce", chunk_nonzeros=25_000_000, input_mb=0, perturbations=9801, genes=8248) == int(
        PREPROCESS_MB_EXACT + 3 * 2 * 9801 * 8248 * 8 / 2**20
    )
    # a stage streaming cells beside P × G tables: the chunk plus the tables' working copies
    assert job_memory_mb("chunk_tables", chunk_nonzeros=25_000_000, input_mb=4_000) == int(
        PREPROCESS_MB_EXACT + 1.5 * 4_000
    )
    assert job_memory_mb("obs", chunk_nonzeros=0, input_mb=10**6) == BASE_MB
    assert 0 < machine_memory_mb() < 2**30


def test_every_job_of_the_demo_declares_memory(workflow):
    out = workflow.run("-n", "--config", "run=demo").stdout
    jobs = re.findall(r"^rule (\w+):\n(.*?)(?:\n\n|\Z)", out, flags=re.M | re.S)
    assert len(jobs) > 100
    # <TBD> in a dry run: the estimate is a function of input files that do not exist yet
    undeclared = sorted({name for name, body in jobs if name != "all" and not re.search(r"\bmem_mb=(\d+|<TBD>)", body)})
    assert undeclared == [], undeclared


def test_a_job_larger_than_the_memory_budget_is_refused(workflow):
    result = workflow.run("results/sim_wessels/qc.json", "-c2", "--resources", "mem_mb=1000", check=False)
    assert result.returncode != 0
    assert re.search(r"rule \w+ \(dataset=sim_wessels\) needs mem_mb=\d+ but this run's memory budget is mem_mb=1000",
                     result.stderr + result.stdout), result.stderr[-3000:]
    assert not (workflow.path / "results").exists()


def _interval(log_path):
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f") for line in log_path.read_text().splitlines()
              if re.match(r"\d{4}-\d\d-\d\d ", line)]
    return min(stamps), max(stamps)


def test_jobs_that_do_not_fit_together_run_one_after_the_other(workflow):
    # room for one preprocessing job, not two: with two cores the two datasets' jobs must not overlap
    budget = int(PREPROCESS_MB * 1.5)
    workflow.run("results/sim_gwps/qc.json", "results/sim_wessels/qc.json", "-c2", "--resources", f"mem_mb={budget}")
    a = _interval(workflow.path / "logs" / "preprocess_dataset" / "sim_gwps.log")
    b = _interval(workflow.path / "logs" / "preprocess_dataset" / "sim_wessels.log")
    assert a[1] <= b[0] or b[1] <= a[0], (a, b)
