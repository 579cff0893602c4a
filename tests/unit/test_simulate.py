"""Simulator: counts, on-target effects, NB moments, DEG counts, additivity, determinism, the Snakemake adapter."""

import runpy
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from pertcal.io import PertcalInputError, write_h5ad, write_parquet
from pertcal.simulate import simulate_perturbseq

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "simulate_dataset.py"
SMALL = dict(
    n_genes=400, n_perturbations=12, n_combos=10, cells_per_perturbation=40, n_control_cells=200, mean_degs=15
)


def group_means(adata: ad.AnnData) -> pd.DataFrame:
    """(conditions, genes) mean raw counts per perturbation label."""
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    names, codes = np.unique(labels, return_inverse=True)
    indicator = sp.csr_matrix((np.ones(len(codes)), (codes, np.arange(len(codes)))))
    sums = np.asarray((indicator @ adata.X).todense())
    return pd.DataFrame(sums / np.bincount(codes)[:, None], index=names, columns=adata.var_names)


def effect_matrix(truth: pd.DataFrame, genes) -> pd.DataFrame:
    """(perturbations, genes) true effects, zero where the truth table has no row."""
    return truth.pivot(index="perturbation", columns="gene", values="effect").reindex(columns=genes).fillna(0.0)


def test_counts_labels_and_truth_follow_the_file_contract():
    adata, truth = simulate_perturbseq(**SMALL, seed=1)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert adata.X.data.min() >= 0 and np.array_equal(adata.X.data, np.round(adata.X.data))
    assert adata.obs_names.is_unique and adata.var_names.is_unique
    assert adata.var_names[0] == "G00001" and adata.n_vars == SMALL["n_genes"]
    labels = set(adata.obs["perturbation"].astype(str))
    singles = {p for p in labels if p != "control" and "+" not in p}
    combos = {p for p in labels if "+" in p}
    assert "control" in labels and len(singles) == 12 and len(combos) == 10
    assert singles <= set(adata.var_names)
    assert all(set(c.split("+")) <= singles for c in combos)
    assert (adata.obs["perturbation"] == "control").sum() == SMALL["n_control_cells"]
    assert list(truth.columns) == ["perturbation", "gene", "effect", "is_deg"]
    assert truth["is_deg"].dtype == bool and (truth["effect"] != 0).all()
    assert set(truth["perturbation"]) == singles | combos and set(truth["gene"]) <= set(adata.var_names)
    assert truth["is_deg"].equals(truth["effect"].abs() >= 0.1)


@pytest.mark.parametrize(("modality", "direction"), [("CRISPRi", -1), ("KO", -1), ("Cas13", -1), ("CRISPRa", 1)])
def test_target_gene_is_knocked_down_or_activated(modality, direction):
    adata, truth = simulate_perturbseq(
        n_genes=300, n_perturbations=15, cells_per_perturbation=80, n_control_cells=500, mean_degs=5,
        modality=modality, seed=2, low_cell_fraction=0.0,
    )
    means = group_means(adata)
    singles = [p for p in means.index if p != "control"]
    change = np.array([means.loc[p, p] - means.loc["control", p] for p in singles])
    assert (np.sign(change) == direction).all()
    on_target = truth[truth["perturbation"] == truth["gene"]].set_index("gene")["effect"]
    assert (np.sign(on_target.loc[singles]) == direction).all() and (on_target.abs() > 1).all()


def control_counts(**overrides) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense control counts (cells, genes) of a large control sample, the genes' simulated means and thetas."""
    adata, _ = simulate_perturbseq(
        n_genes=60, n_perturbations=2, cells_per_perturbation=12, n_control_cells=30_000, mean_degs=0, seed=1,
        **overrides,
    )
    counts = adata[adata.obs["perturbation"] == "control"].X.toarray().astype(np.float64)
    return counts, adata.var["sim_mean"].to_numpy(), adata.var["sim_theta"].to_numpy()


def test_control_counts_match_the_negative_binomial_closed_form():
    counts, mu, theta = control_counts(library_size_sdlog=0.0, program_activity_sd=0.0)
    n = len(counts)
    mean, var, _, kurtosis = stats.nbinom.stats(theta, theta / (theta + mu), moments="mvsk")
    np.testing.assert_allclose(var, mu + mu**2 / theta)
    z_mean = (counts.mean(axis=0) - mean) / np.sqrt(var / n)
    # Sampling SD of the sample variance from the NB's excess kurtosis.
    z_var = (counts.var(axis=0, ddof=1) - var) / (var * np.sqrt((kurtosis + 2) / n))
    assert np.abs(z_mean).max() < 5 and np.abs(z_var).max() < 5
    poisson_z = (counts.var(axis=0, ddof=1) - mu) / (var * np.sqrt((kurtosis + 2) / n))
    assert np.abs(poisson_z).max() > 20


def test_library_size_variation_follows_the_lognormal_mixture():
    sdlog = 0.4
    counts, mu, theta = control_counts(library_size_sdlog=sdlog, program_activity_sd=0.0)
    inflation = np.exp(sdlog**2)
    # Var = E[m] + E[m²]/θ + Var(m) for NB with mean m = μ·L, L log-normal with mean one.
    expected = mu + mu**2 * inflation / theta + mu**2 * (inflation - 1)
    expressed = mu > 0.5
    np.testing.assert_allclose(counts.mean(axis=0)[expressed], mu[expressed], rtol=0.05)
    np.testing.assert_allclose(counts.var(axis=0, ddof=1)[expressed], expected[expressed], rtol=0.12)


def test_deg_counts_average_mean_degs_with_a_heavy_tail():
    adata, truth = simulate_perturbseq(
        n_genes=1500, n_perturbations=300, cells_per_perturbation=12, n_control_cells=20, mean_degs=20, seed=4,
        low_cell_fraction=0.0,
    )
    singles = sorted(set(adata.obs["perturbation"].astype(str)) - {"control"})
    downstream = truth[truth["is_deg"] & (truth["gene"] != truth["perturbation"])]
    n_degs = downstream.groupby("perturbation").size().reindex(singles, fill_value=0)
    assert n_degs.mean() == pytest.approx(20, rel=0.1)
    assert (n_degs == 0).mean() > 0.15 and n_degs.max() > 5 * n_degs.median() and n_degs.max() > 100


def test_combos_add_their_singles_except_the_interacting_minority():
    adata, truth = simulate_perturbseq(
        n_genes=200, n_perturbations=8, n_combos=20, cells_per_perturbation=600, n_control_cells=3000, mean_degs=20,
        interaction_fraction=0.25, seed=5, library_size_sdlog=0.0, program_activity_sd=0.0, low_cell_fraction=0.0,
    )
    effects = effect_matrix(truth, adata.var_names)
    combos = [p for p in effects.index if "+" in p]
    additive = {c: np.allclose(effects.loc[c], sum(effects.loc[s] for s in c.split("+"))) for c in combos}
    assert sum(not ok for ok in additive.values()) == 5

    # The counts carry the same additivity: observed log-fold of a combo = sum of its singles' observed log-folds,
    # checked on genes expected at ≥ 2 counts per cell in control, both singles and the combo (small sampling error).
    means = group_means(adata)
    for combo in (c for c in combos if additive[c]):
        first, second = combo.split("+")
        expected = adata.var["sim_mean"] * np.exp(np.minimum(effects.loc[[first, second, combo]].min(), 0))
        genes = adata.var_names[expected.to_numpy() >= 2]
        log_fold = np.log(means.loc[:, genes] / means.loc["control", genes])
        predicted = log_fold.loc[first] + log_fold.loc[second]
        np.testing.assert_allclose(log_fold.loc[combo], predicted, atol=0.3)
        np.testing.assert_allclose(log_fold.loc[combo], effects.loc[combo, genes], atol=0.3)


def test_a_few_perturbations_fall_below_the_qc_minimum_but_no_combo_component():
    adata, _ = simulate_perturbseq(**{**SMALL, "n_perturbations": 30}, seed=6, low_cell_fraction=0.1)
    counts = adata.obs["perturbation"].astype(str).value_counts().drop("control")
    low = set(counts.index[counts < 12])
    assert len(low) == 4
    components = {s for p in counts.index if "+" in p for s in p.split("+")}
    assert not low & components


def test_same_seed_is_identical_and_another_seed_differs(tmp_path):
    first, truth_first = simulate_perturbseq(**SMALL, seed=7)
    second, truth_second = simulate_perturbseq(**SMALL, seed=7)
    other, truth_other = simulate_perturbseq(**SMALL, seed=8)
    for field in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(first.X, field), getattr(second.X, field))
    assert first.obs.equals(second.obs) and first.var.equals(second.var)
    pd.testing.assert_frame_equal(truth_first, truth_second)
    assert not truth_first.equals(truth_other) and not first.obs_names.equals(other.obs_names)
    assert not np.array_equal(first.X[:50].toarray(), other.X[:50].toarray())
    for i, (adata, truth) in enumerate([(first, truth_first), (second, truth_second)]):
        write_h5ad(adata, tmp_path / f"raw{i}.h5ad")
        write_parquet(truth, tmp_path / f"truth{i}.parquet")
    assert (tmp_path / "raw0.h5ad").read_bytes() == (tmp_path / "raw1.h5ad").read_bytes()
    assert (tmp_path / "truth0.parquet").read_bytes() == (tmp_path / "truth1.parquet").read_bytes()


def test_a_demo_scale_screen_runs_in_one_call():
    adata, truth = simulate_perturbseq(
        n_genes=1500, n_perturbations=60, cells_per_perturbation=80, n_control_cells=800, mean_degs=40, seed=9
    )
    assert 4_500 < adata.n_obs < 7_000 and adata.n_vars == 1500 and len(truth) > 60


@pytest.mark.parametrize(
    ("field", "value"),
    [("n_combos", 100), ("modality", "RNAi"), ("interaction_fraction", 1.5), ("n_perturbations", 500)],
)
def test_out_of_range_parameters_name_the_field(field, value):
    with pytest.raises(PertcalInputError, match=field):
        simulate_perturbseq(**{**SMALL, field: value})


def run_script(tmp_path, simulate: dict) -> SimpleNamespace:
    """Run scripts/simulate_dataset.py with a stand-in for Snakemake's `snakemake` object."""
    smk = SimpleNamespace(
        params=SimpleNamespace(simulate=simulate, modality="CRISPRa", seed=3),
        wildcards=SimpleNamespace(dataset="sim_demo"),
        output=SimpleNamespace(raw=str(tmp_path / "raw.h5ad"), truth=str(tmp_path / "truth.parquet")),
        log=[str(tmp_path / "simulate.log")],
    )
    runpy.run_path(str(SCRIPT), init_globals={"snakemake": smk})
    return smk


def test_script_writes_raw_and_truth(tmp_path):
    smk = run_script(tmp_path, dict(SMALL))
    expected, expected_truth = simulate_perturbseq(**SMALL, modality="CRISPRa", seed=3)
    raw = ad.read_h5ad(smk.output.raw)
    assert (raw.X != expected.X).nnz == 0 and raw.obs_names.equals(expected.obs_names)
    pd.testing.assert_frame_equal(pd.read_parquet(smk.output.truth), expected_truth)


def test_script_names_dataset_and_field_and_leaves_no_output(tmp_path):
    with pytest.raises(PertcalInputError, match=r"sim_demo.*source\.simulate.*n_combos"):
        run_script(tmp_path, {**SMALL, "n_combos": 1000})
    with pytest.raises(PertcalInputError, match=r"sim_demo.*unknown.*n_cells"):
        run_script(tmp_path, {**SMALL, "n_cells": 5})
    assert not (tmp_path / "raw.h5ad").exists() and not (tmp_path / "truth.parquet").exists()
