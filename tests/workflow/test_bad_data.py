"""Datasets that cannot be benchmarked, and files that are not what they claim, refused by the first stage:
the dataset, the file and the field named, the fix suggested, and no prediction, metric or DRF file written."""

from __future__ import annotations

import json

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from test_bad_input import user_dataset, write_raw

pytestmark = pytest.mark.workflow

LABELS = ["control"] * 40 + ["G0001"] * 20 + ["G0002"] * 20 + ["G0003"] * 20
COUNTS = np.random.default_rng(2).poisson(3, size=(len(LABELS), 30)).astype(np.float32)



def scaled(x):
    return x / 50


def log2_normalized(x):
    return np.log2(1 + x / x.sum(axis=1, keepdims=True) * 1e4)


def corrupt_indices(path):
    """4 KB of random bytes written over X/indices inside the file, as a damaged copy would have them."""
    with h5py.File(path, "r") as f:
        dset = f["X/indices"].id
        offset = dset.get_offset() if dset.get_offset() is not None else dset.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.random.default_rng(0).bytes(4096))


@pytest.mark.parametrize(
    "item, raw, damage, message",
    [
        ("3 only controls", dict(labels=["control"] * 80), None, r"0 perturbation\(s\).*at least 2"),
        ("4 one perturbation", dict(labels=["control"] * 40 + ["G0001"] * 40), None, r"1 perturbation\(s\)"),
        ("5 'nan' labels", dict(labels=LABELS[:80] + ["nan"] * 20), None,
         "labelled as a missing value.*keep_cells_where"),
        ("5 empty labels", dict(labels=LABELS[:80] + [""] * 20), None, "missing value"),
        ("6 no target among genes", dict(labels=LABELS, genes=[f"ENSG{j:011d}" for j in range(30)]), None,
         "none of the 3 perturbed targets.*gene_symbol_column"),
        ("7 scaled counts", dict(labels=LABELS, values=scaled(COUNTS)), None, "neither raw counts.*values: log1p"),
        ("7 log2 of normalized", dict(labels=LABELS, values=log2_normalized(COUNTS)), None, "neither raw counts"),
        ("10 corrupt X", {}, corrupt_indices, "corrupt"),
        ("10 empty file", {}, lambda p: p.write_bytes(b""), r"empty \(0 bytes\): not an HDF5/AnnData file"),
        ("10 CSV named .h5ad", {}, lambda p: p.write_text("cell,G0001\nc0,1\n"), "not an HDF5/AnnData file"),
    ],
)
def test_unbenchmarkable_data_refused_at_preprocessing(workflow, tmp_path, item, raw, damage, message):
    path = tmp_path / "mine.h5ad"
    write_raw(path, **raw)
    if damage:
        damage(path)
    result = workflow.run("results/mine/drf.parquet", "-c1", config=user_dataset(path), check=False)
    assert result.returncode != 0, item
    log = (workflow.path / "logs" / "preprocess_dataset" / "mine.log").read_text()
    assert "dataset 'mine'" in log and str(path) in log, log[-2000:]
    assert pd.Series([log]).str.contains(message, regex=True).item(), log[-2000:]
    written = [p.relative_to(workflow.path).as_posix() for p in (workflow.path / "results").rglob("*") if p.is_file()]
    assert written == [], written


def test_duplicate_cell_names_made_unique_and_some_missing_targets_reported(workflow, tmp_path):
    path = tmp_path / "mine.h5ad"
    write_raw(path, labels=LABELS[:80] + ["NOTAGENE"] * 20, values=COUNTS)
    with h5py.File(path, "r+") as f:
        index = f["obs"].attrs["_index"]
        names = f["obs"][index][:]
        names[1] = names[0]
        f["obs"][index][:] = names
    result = workflow.run("results/mine/processed.h5ad", "-c1", config=user_dataset(path))
    log = (workflow.path / "logs" / "preprocess_dataset" / "mine.log").read_text()
    assert "1 duplicate cell names in obs made unique" in log
    assert "1 of 3 perturbed targets are not among the genes" in result.stderr  # on the terminal, not only the log
    qc = json.loads((workflow.path / "results" / "mine" / "qc.json").read_text())
    assert qc["missing_targets"] == ["NOTAGENE"]
    assert ad.read_h5ad(workflow.path / "results" / "mine" / "processed.h5ad").obs_names.is_unique


def test_combos_missing_a_single_are_named_at_preprocessing_and_by_the_additive_baseline(workflow, tmp_path):
    # item 9: G0003 and G0004 were never perturbed alone, so two combos cannot be built from both singles
    combos = ["G0001+G0002"] * 20 + ["G0001+G0003"] * 20 + ["G0002+G0004"] * 20
    labels = ["control"] * 40 + ["G0001"] * 20 + ["G0002"] * 20 + combos
    path = tmp_path / "mine.h5ad"
    write_raw(path, labels=labels)
    config = user_dataset(path, tasks=["combo"])
    config["datasets"]["mine"]["processing"]["n_folds_combo"] = 2
    targets = [f"results/mine/predictions/combo/fold{f}/additive.h5ad" for f in (0, 1)]
    result = workflow.run(*targets, "-c1", config=config)
    assert "2 combos lack a single perturbation after QC" in result.stderr  # on the terminal
    assert "G0001+G0003: missing G0003; G0002+G0004: missing G0004" in result.stderr
    qc = json.loads((workflow.path / "results" / "mine" / "qc.json").read_text())
    assert qc["combos_missing_singles"] == {"G0001+G0003": ["G0003"], "G0002+G0004": ["G0004"]}
    noted = [note for t in targets for note in ad.read_h5ad(workflow.path / t).uns.get("incomplete_combos", [])]
    tested = [p for t in targets for p in ad.read_h5ad(workflow.path / t).obs_names if p != "G0001+G0002"]
    assert sorted(noted) == sorted(f"{p}: missing {p.split('+')[1]}" for p in tested)
