"""DEG counts and DEG recovery from a DEG matrix file, matched to the simulator's truth by name."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertcal.summary import deg_recovery, n_degs


def _matrix():
    # rows B, A; genes g2, g0, g1 — another order than the truth table's
    return ad.AnnData(
        obs=pd.DataFrame(index=["B", "A"]), var=pd.DataFrame(index=["g2", "g0", "g1"]),
        layers={"pval_adj": np.array([[0.01, 0.5, 0.04], [0.2, 0.001, 0.06]], dtype=np.float32)},
    )


def test_n_degs_per_perturbation_by_name():
    counts = n_degs(_matrix(), alpha=0.05)
    assert counts.to_dict() == {"A": 1, "B": 2}


def test_deg_recovery_matches_by_name_and_skips_what_truth_does_not_describe():
    truth = pd.DataFrame(
        {
            "perturbation": ["A", "A", "B", "B", "B", "Z"],
            "gene": ["g0", "g1", "g2", "g0", "g9", "g0"],
            "is_deg": [True, True, True, False, True, True],
        }
    )
    got = deg_recovery(_matrix(), truth, alpha=0.05)
    # called: A·g0, B·g2, B·g1; true among tested genes: A·g0, A·g1, B·g2 (g9 untested, Z untested)
    assert got == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3), "n_called": 3, "n_true": 3}
    only_a = deg_recovery(_matrix(), truth[truth["perturbation"] == "A"], alpha=0.05)
    assert only_a["n_called"] == 1 and only_a["recall"] == pytest.approx(0.5)
