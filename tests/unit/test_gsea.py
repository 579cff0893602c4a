"""pertcal.gsea: preranked GSEA against gseapy's prerank and hand-worked running sums, the GMT reader on a library
fetched from a loopback server, the simulator's target sets, and the self-enrichment table from prediction files."""

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertcal.download import DownloadError, fetch
from pertcal.gsea import (
    GT_METHOD,
    RESULT_COLUMNS,
    RandomSets,
    add_fdr,
    enrichment_scores,
    predicted_delta,
    prerank,
    read_gmt,
    regulator_sets,
    self_enrichment,
    self_enrichment_table,
    simulated_target_sets,
    summarize_self_enrichment,
    write_gmt,
)
from pertcal.io import PertcalInputError, write_h5ad
from pertcal.simulate import simulate_perturbseq

# Two lines in Enrichr's text layout: term, empty description, genes (the weights of 'GENE,1.0' are dropped).
ENRICHR_GMT = "ATF2 ENCODE\t\tG1\tG2\tG3\t\nATF2 CHEA\t\tG3,1.0\tG4,1.0\nmyc encode\t\tg5\tG6\n"


# --- the ES against hand-worked running sums --------------------------------------------------------------------


def test_enrichment_score_matches_hand_worked_running_sums():
    # ranking A=3, B=2, C=1, D=-1 (G = 4, k = 2: each non-member steps down by 1/2)
    weights = np.array([3.0, 2.0, 1.0, 1.0])
    # {A, C}: +3/4 → 0.75, −1/2 → 0.25, +1/4 → 0.5, −1/2 → 0: ES = 0.75
    # {B, D}: −1/2, +2/3 → 0.1667, −1/2 → −0.3333, +1/3 → 0: max 1/6, min −1/2, ES = −0.5
    es = enrichment_scores(weights, np.array([[0, 2], [1, 3]]))
    np.testing.assert_allclose(es, [0.75, -0.5], rtol=0, atol=1e-15)


def test_members_that_all_score_zero_step_uniformly():
    # {C, D} both score 0: steps of 1/2; A, B misses of 1/2 each → −1, then back to 0: ES = −1
    es = enrichment_scores(np.array([2.0, 1.0, 0.0, 0.0]), np.array([[2, 3]]))
    np.testing.assert_allclose(es, [-1.0], atol=1e-15)


# --- against gseapy's prerank (independent reference) ---------------------------------------------------------------


def _case(kind: str, rng: np.random.Generator):
    genes = np.array([f"GENE{i:04d}" for i in range(800)])
    score = pd.Series(rng.normal(size=len(genes)), index=genes)
    by_score = score.sort_values(ascending=False).index
    if kind == "up":
        members = list(by_score[:240:6]) + list(rng.choice(genes, 15, replace=False))
    elif kind == "down":
        members = list(by_score[-300::10]) + list(rng.choice(genes, 10, replace=False))
    else:
        members = list(rng.choice(genes, 40, replace=False))
    return score, sorted(set(members))


@pytest.mark.parametrize("kind", ["up", "down", "random"])
def test_prerank_agrees_with_gseapy(kind):
    gseapy = pytest.importorskip("gseapy")
    score, members = _case(kind, np.random.default_rng({"up": 1, "down": 2, "random": 3}[kind]))
    ref = gseapy.prerank(
        rnk=score, gene_sets={"S": members}, permutation_num=4000, seed=7, min_size=1, max_size=10_000, threads=1,
        outdir=None, no_plot=True, verbose=False,
    ).res2d.iloc[0]
    ours = prerank(score.to_numpy(), score.index.isin(members), null=RandomSets(4000, seed=7))
    assert ours["set_size"] == len(members)
    # the observed ES is deterministic: equal up to floating-point summation order
    assert ours["es"] == pytest.approx(float(ref["ES"]), rel=1e-12, abs=1e-15)
    # NES and p come from independent random nulls (other RNGs): equal within Monte Carlo error
    assert ours["nes"] == pytest.approx(float(ref["NES"]), rel=0.04)
    assert ours["pval"] == pytest.approx(float(ref["NOM p-val"]), abs=0.03)
    if kind != "random":
        assert ours["pval"] < 0.01 and np.sign(ours["nes"]) == (1 if kind == "up" else -1)


def test_random_sets_are_uniform_sorted_and_seeded():
    null = RandomSets(4000, seed=3)
    pos = null.positions(50, 5)
    assert pos.shape == (4000, 5)
    assert (np.diff(pos, axis=1) > 0).all() and pos.min() >= 0 and pos.max() < 50  # sorted, distinct, in range
    counts = np.bincount(pos.ravel(), minlength=50)
    expected = 4000 * 5 / 50
    assert np.abs(counts - expected).max() < 5 * np.sqrt(expected)  # each position drawn k/G of the time
    np.testing.assert_array_equal(RandomSets(4000, seed=3).positions(50, 5), pos)
    assert not np.array_equal(RandomSets(4000, seed=4).positions(50, 5), pos)


def test_prerank_ignores_unranked_genes_and_refuses_small_sets():
    values = np.array([3.0, np.nan, 2.0, 1.0, -1.0])
    member = np.array([True, True, False, True, False])
    full = prerank(values, member, null=RandomSets(100, 0))
    assert full["set_size"] == 2
    assert full["es"] == pytest.approx(0.75)  # the hand-worked {A, C} case once the NaN gene is dropped
    small = prerank(values, member, null=RandomSets(100, 0), min_size=3)
    assert small["set_size"] == 2 and np.isnan(small["es"]) and np.isnan(small["pval"])


# --- the gene-set library -------------------------------------------------------------------------------------------


def test_read_gmt_parses_enrichr_layout_and_regulators_merge_sources(tmp_path):
    path = tmp_path / "lib.gmt"
    path.write_text(ENRICHR_GMT)
    library = read_gmt(path)
    assert library == {"ATF2 ENCODE": ["G1", "G2", "G3"], "ATF2 CHEA": ["G3", "G4"], "myc encode": ["g5", "G6"]}
    assert regulator_sets(library) == {"ATF2": frozenset({"G1", "G2", "G3", "G4"}), "MYC": frozenset({"G5", "G6"})}


@pytest.mark.parametrize("text, problem", [("ATF2\t\n", "line 1"), ("A\t\tG1\nA\t\tG2\n", "appears twice"), ("\n", "no gene sets")])
def test_read_gmt_refuses_bad_files_naming_file_and_line(tmp_path, text, problem):
    path = tmp_path / "bad.gmt"
    path.write_text(text)
    with pytest.raises(PertcalInputError, match=problem) as err:
        read_gmt(path)
    assert str(path) in str(err.value)


def test_write_gmt_round_trips(tmp_path):
    sets = {"A SIMULATED": ["G2", "G1"], "B SIMULATED": ["G3"]}
    write_gmt(sets, tmp_path / "s.gmt")
    assert read_gmt(tmp_path / "s.gmt") == sets


@pytest.fixture
def gmt_server(tmp_path):
    """A static HTTP server on an ephemeral 127.0.0.1 port serving tmp_path/served/."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join()


def test_library_fetched_from_loopback_with_checksum_then_parsed(gmt_server, tmp_path):
    served, base = gmt_server
    (served / "library.txt").write_text(ENRICHR_GMT)
    sha = hashlib.sha256(ENRICHR_GMT.encode()).hexdigest()
    dest = tmp_path / "resources" / "external" / "encode_chea_consensus_tfs.gmt"
    fetch([f"{base}/library.txt"], dest, sha256=sha, dataset="gsea", backoff=0.001, timeout=5.0)
    assert regulator_sets(read_gmt(dest))["ATF2"] == frozenset({"G1", "G2", "G3", "G4"})
    (served / "library.txt").write_text(ENRICHR_GMT + "EXTRA\t\tG9\n")  # the library changed upstream
    dest.unlink()
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch([f"{base}/library.txt"], dest, sha256=sha, dataset="gsea", backoff=0.001, timeout=5.0)
    assert not dest.exists()


# --- the simulator's target sets ------------------------------------------------------------------------------------


def test_simulated_target_sets_are_true_downstream_degs_of_singles():
    truth = pd.DataFrame(
        {
            "perturbation": ["G1", "G1", "G1", "G1", "G2", "G1+G2", "G3"],
            "gene": ["G1", "G5", "G6", "G7", "G8", "G9", "G3"],
            "effect": [-2.3, 0.5, -0.05, -0.4, 0.3, 0.9, -2.2],
            "is_deg": [True, True, False, True, True, True, True],
        }
    )
    # G1: its own on-target row and the sub-threshold G6 left out; the combo adds none; G3 has no downstream DEG
    assert simulated_target_sets(truth) == {"G1 SIMULATED": ["G5", "G7"], "G2 SIMULATED": ["G8"]}


def test_simulated_target_sets_of_the_simulator():
    raw, truth = simulate_perturbseq(n_genes=300, n_perturbations=6, n_combos=3, cells_per_perturbation=20,
                                     n_control_cells=40, mean_degs=20, seed=0)
    sets = simulated_target_sets(truth)
    singles = [p for p in truth["perturbation"].unique() if "+" not in p]
    for pert in singles:
        expected = truth[(truth["perturbation"] == pert) & (truth["effect"].abs() >= 0.1) & (truth["gene"] != pert)]
        assert sets.get(f"{pert} SIMULATED", []) == expected["gene"].tolist()
    assert set(sets) <= {f"{p} SIMULATED" for p in singles}
    assert all(set(genes) <= set(raw.var_names) for genes in sets.values())


# --- self-enrichment ------------------------------------------------------------------------------------------------


def _planted(rng, perturbations, genes, sets, strength=3.0):
    """(P, G) scores: noise, plus `strength` on the targets of each perturbation's targets' sets (signed by target)."""
    scores = pd.DataFrame(rng.normal(size=(len(perturbations), len(genes))), index=perturbations, columns=genes)
    for pert in perturbations:
        for i, target in enumerate(pert.split("+")):
            if target in sets:
                scores.loc[pert, sorted(sets[target])] += strength * (1 if i == 0 else -1)
    return scores


def test_self_enrichment_tests_each_target_of_a_combo_and_skips_what_it_cannot_test():
    rng = np.random.default_rng(0)
    genes = [f"G{i:03d}" for i in range(300)]
    sets = {"G001": frozenset(genes[10:40]), "G002": frozenset(genes[50:70]), "G003": frozenset(genes[80:83])}
    scores = _planted(rng, ["G001", "G001+G002", "G004", "G003"], genes, sets)
    scores.loc["ZERO"] = 0.0  # a ranking without information (e.g. a Δ of 0) is not tested
    table = self_enrichment(scores, sets | {"ZERO": frozenset(genes[:10])}, null=RandomSets(500, 1), min_set_size=5)
    assert table[["perturbation", "gene_set"]].values.tolist() == [
        ["G001", "G001"], ["G001+G002", "G001"], ["G001+G002", "G002"], ["G003", "G003"]
    ]
    g = table.set_index(["perturbation", "gene_set"])
    assert g.loc[("G001", "G001"), "nes"] > 1 and g.loc[("G001", "G001"), "pval"] < 0.01
    assert g.loc[("G001+G002", "G002"), "nes"] < -1 and g.loc[("G001+G002", "G002"), "pval"] < 0.01
    assert g.loc[("G003", "G003"), "set_size"] == 3 and np.isnan(g.loc[("G003", "G003"), "nes"])  # below min size


def test_self_enrichment_matches_genes_case_insensitively():
    genes = ["g1", "g2", "g3", "g4", "g5", "g6"]
    scores = pd.DataFrame([[5.0, 4.0, 3.0, -1.0, -2.0, -3.0]], index=["tf1"], columns=genes)
    table = self_enrichment(scores, {"TF1": frozenset({"G1", "G2"})}, null=RandomSets(200, 0), min_set_size=1)
    assert table["gene_set"].tolist() == ["TF1"] and table["set_size"].tolist() == [2] and table["es"].iloc[0] == 1.0


def test_fdr_is_bh_within_task_and_method():
    table = pd.DataFrame(
        {
            "task": ["single"] * 5, "method": ["mean", "mean", "mean", "linear", "mean"],
            "pval": [0.01, 0.04, 0.03, 0.02, np.nan],
        }
    )
    # mean: sorted p 0.01, 0.03, 0.04 (m = 3) → 0.03, 0.045, 0.04 → step-up minimum 0.03, 0.04, 0.04
    np.testing.assert_allclose(add_fdr(table)["fdr"], [0.03, 0.04, 0.04, 0.02, np.nan])


def test_predicted_delta_aligns_control_by_name():
    genes = ["A", "B", "C"]
    pred = ad.AnnData(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), obs=pd.DataFrame(index=["p1", "p2"]),
                      var=pd.DataFrame(index=genes))
    control = ad.AnnData(np.array([[0.3, 0.2, 0.1], [0.3, 0.2, 0.1]]), obs=pd.DataFrame(index=["p2", "p1"]),
                         var=pd.DataFrame(index=genes[::-1]))
    delta = predicted_delta(pred, control, source="pred.h5ad")
    np.testing.assert_allclose(delta.to_numpy(), [[0.9, 1.8, 2.7], [3.9, 4.8, 5.7]])
    with pytest.raises(PertcalInputError, match="pred.h5ad"):
        predicted_delta(pred, control[:, ["A", "B"]], source="pred.h5ad")


def _write_prediction(path, frame: pd.DataFrame):
    write_h5ad(ad.AnnData(frame.to_numpy(), obs=pd.DataFrame(index=frame.index), var=pd.DataFrame(index=frame.columns)), path)


def test_self_enrichment_table_from_files(tmp_path):
    rng = np.random.default_rng(5)
    genes = [f"G{i:03d}" for i in range(200)]
    sets = {"G001": frozenset(genes[10:30]), "G002": frozenset(genes[40:60])}
    perts = ["G001", "G002", "G003"]
    t = _planted(rng, perts, genes, sets)
    write_h5ad(ad.AnnData(obs=pd.DataFrame({"perturbation": perts}, index=perts), var=pd.DataFrame(index=genes),
                          layers={"score": t.to_numpy(dtype=np.float32)}), tmp_path / "degs_gt.h5ad")
    ctrl = pd.DataFrame(np.tile(rng.uniform(1, 2, len(genes)), (2, 1)), columns=genes)
    folds = {0: ["G001", "G003"], 1: ["G002"]}
    controls, predictions = {}, {}
    for fold, test in folds.items():
        controls[("single", fold)] = tmp_path / f"control{fold}.h5ad"
        _write_prediction(controls[("single", fold)], ctrl.iloc[: len(test)].set_axis(test))
        good = ctrl.iloc[: len(test)].set_axis(test) + 0.2 * t.loc[test].to_numpy()  # follows the observed t
        predictions[("single", fold, "good")] = tmp_path / f"good{fold}.h5ad"
        _write_prediction(predictions[("single", fold, "good")], good)
    table = self_enrichment_table(tmp_path / "degs_gt.h5ad", controls, predictions, sets, n_permutations=300,
                                  min_set_size=5, seed=0)
    assert list(table.columns) == RESULT_COLUMNS + ["fdr"]
    assert table[["fold", "method", "perturbation"]].values.tolist() == [
        [0, GT_METHOD, "G001"], [0, "good", "G001"], [1, GT_METHOD, "G002"], [1, "good", "G002"]
    ]
    assert (table["nes"] > 1).all() and (table["fdr"] < 0.05).all()
    again = self_enrichment_table(tmp_path / "degs_gt.h5ad", controls, predictions, sets, n_permutations=300,
                                  min_set_size=5, seed=0)
    pd.testing.assert_frame_equal(table, again)  # seeded: the same table
    summary = summarize_self_enrichment(table.assign(dataset="toy"), alpha=0.05)
    assert summary[["method", "n_tested", "fraction_significant", "fraction_sign_as_gt"]].values.tolist() == [
        [GT_METHOD, 2, 1.0, 1.0], ["good", 2, 1.0, 1.0]
    ]
