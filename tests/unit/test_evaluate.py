"""pertcal.evaluate: a fold's scores align genes by NAME and do not depend on Python's hash seed (the published
code's *_degs metrics did both wrong; docs/method.md, "Departures from the published code")."""

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
from pertcal.evaluate import score_fold

GENES = [f"gene_{c}{i}" for c in "QWERTY" for i in range(5)]  # 30 names whose set order varies with the hash seed
PERTS = ["control", "pA", "pB", "pC", "pD", "pE", "pF"]
TRAIN, TEST = ["pA", "pB", "pC"], ["pD", "pE", "pF"]


def toy_fold(seed: int = 0):
    """(prediction, stats, folds, degs_gt) of a small fold; stats hold Σx of 10 cells per (perturbation, half)."""
    rng = np.random.default_rng(seed)
    G = len(GENES)
    rows = [(p, h) for p in PERTS for h in ("gt", "td")]
    means = rng.gamma(2.0, 0.5, (len(rows), G))
    obs = pd.DataFrame(
        {"perturbation": [p for p, _ in rows], "half": [h for _, h in rows], "n_cells": 10,
         "is_control": [p == "control" for p, _ in rows]},
        index=[f"{p}|{h}" for p, h in rows],
    )
    stats = ad.AnnData(obs=obs, var=pd.DataFrame(index=GENES), layers={"sum": means * 10})
    folds = pd.DataFrame({"perturbation": TRAIN + TEST, "fold": 0, "split": ["train"] * 3 + ["test"] * 3})
    # each test perturbation has its own DEGs (p < 0.05), scattered over the gene order
    pval = rng.uniform(0.2, 1.0, (len(TEST), G))
    for i in range(len(TEST)):
        pval[i, rng.choice(G, size=6 + 2 * i, replace=False)] = rng.uniform(0, 0.01, 6 + 2 * i)
    degs_gt = ad.AnnData(
        obs=pd.DataFrame({"perturbation": TEST}, index=TEST), var=pd.DataFrame(index=GENES),
        layers={"score": rng.normal(0, 3, (len(TEST), G)), "pval_adj": pval},
    )
    prediction = ad.AnnData(
        X=rng.gamma(2.0, 0.5, (len(TEST), G)), obs=pd.DataFrame(index=TEST), var=pd.DataFrame(index=GENES)
    )
    return prediction, stats, folds, degs_gt


def _permuted(adata: ad.AnnData, order: np.ndarray) -> ad.AnnData:
    return adata[:, order].copy()


def test_degs_metrics_align_genes_by_name_and_match_a_hand_computation():
    from sklearn.metrics import r2_score  # here: the hash-seed subprocesses import this module and need no sklearn

    prediction, stats, folds, degs_gt = toy_fold()
    scores = score_fold(prediction, stats, folds, 0, degs_gt, deg_alpha=0.05)
    # every input in its own gene order: identical results
    rng = np.random.default_rng(1)
    permuted = score_fold(
        _permuted(prediction, rng.permutation(len(GENES))), _permuted(stats, rng.permutation(len(GENES))), folds, 0,
        _permuted(degs_gt, rng.permutation(len(GENES))), deg_alpha=0.05,
    )
    pd.testing.assert_frame_equal(permuted, scores)

    # by hand, on the named DEG subset of pE
    def frame(layer_rows, index):
        return pd.DataFrame(layer_rows, columns=GENES, index=index)

    sums = frame(stats.layers["sum"] / 10, stats.obs_names)
    control = sums.loc[["control|gt", "control|td"]].mean()
    mean = pd.concat([sums.loc[[f"{p}|gt", f"{p}|td"]].mean() for p in TRAIN], axis=1).mean(axis=1)
    truth = sums.loc["pE|gt"]
    pred = frame(prediction.X, TEST).loc["pE"]
    degs = [g for g, p in zip(GENES, degs_gt.layers["pval_adj"][1]) if p < 0.05]
    assert len(degs) == 8
    value = scores.set_index(["perturbation", "metric"])["value"]
    for ref, name in ((control, "deltactrl"), (mean, "deltapert")):
        dt, dp = (truth - ref)[degs], (pred - ref)[degs]
        np.testing.assert_allclose(value[("pE", f"pearson_{name}_degs")], np.corrcoef(dp, dt)[0, 1], rtol=1e-12)
        np.testing.assert_allclose(value[("pE", f"r2_{name}_degs")], r2_score(dt, dp), rtol=1e-12)


HASH_SCRIPT = """
import sys
from tests.unit.test_evaluate import toy_fold
from pertcal.evaluate import score_fold
from pertcal.io import write_parquet
prediction, stats, folds, degs_gt = toy_fold()
write_parquet(score_fold(prediction, stats, folds, 0, degs_gt, deg_alpha=0.05), sys.argv[1])
"""


def test_scores_do_not_depend_on_the_hash_seed(tmp_path):
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    outputs = []
    for seed in ("0", "12345"):
        out = tmp_path / f"scores_{seed}.parquet"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", HASH_SCRIPT, str(out)], cwd=repo, env=env, check=True, timeout=120)
        outputs.append(out.read_bytes())
    # the hash seeds do order this gene set differently (so the test could fail), the scores stay byte-identical
    orders = {
        subprocess.run(
            [sys.executable, "-c", f"print(list({set(GENES)!r}))"], env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in ("0", "12345")
    }
    assert len(orders) == 2
    assert outputs[0] == outputs[1]
    assert pd.read_parquet(tmp_path / "scores_0.parquet")["value"].notna().any()
