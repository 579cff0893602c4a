"""Halves are balanced, seeded, disjoint; folds honour the fractions and the task rules."""

import numpy as np
import pandas as pd
import pytest

from pertcal.io import PertcalInputError
from pertcal.split import assign_folds_combo, assign_folds_single, split_halves


def test_halves_balanced_disjoint_seeded():
    sizes = {"control": 41, "A": 12, "B": 13, "C+D": 30}
    labels = pd.Series(np.repeat(list(sizes), list(sizes.values())), index=[f"c{i}" for i in range(sum(sizes.values()))])
    h = split_halves(labels, seed=7)
    assert list(h["cell"]) == list(labels.index) and h["cell"].is_unique
    counts = h.groupby(["perturbation", "half"]).size().unstack()
    for pert, n in sizes.items():
        assert counts.loc[pert, "gt"] == n // 2 and counts.loc[pert, "td"] == n - n // 2
    assert h.equals(split_halves(labels, seed=7))
    assert not h["half"].equals(split_halves(labels, seed=8)["half"])


def test_single_folds_fractions_and_each_test_once():
    perts = ["control"] + [f"P{i:03d}" for i in range(103)]
    f = assign_folds_single(perts, n_folds=5, val_fraction=0.1375, seed=42)
    assert "control" not in set(f["perturbation"])
    test = f[f["split"] == "test"]
    assert test["perturbation"].is_unique and len(test) == 103
    assert sorted(test.groupby("fold").size()) == [20, 20, 21, 21, 21]
    for fold, g in f.groupby("fold"):
        assert g["perturbation"].is_unique and len(g) == 103
        n_rest = 103 - (g["split"] == "test").sum()
        assert (g["split"] == "val").sum() == int(0.1375 * n_rest)
    assert f.equals(assign_folds_single(perts, n_folds=5, val_fraction=0.1375, seed=42))


def test_combo_folds_rules():
    singles = [f"S{i}" for i in range(6)]
    combos = [f"S{i}+S{j}" for i in range(6) for j in range(i + 1, 6)][:14]
    f = assign_folds_combo(["control"] + singles + combos, seed=3)
    for fold, g in f.groupby("fold"):
        s = g.set_index("perturbation")["split"]
        assert (s[singles] == "train").all()
        c = s[combos]
        assert (c == "test").sum() == 7 and (c == "val").sum() == 3 and (c == "train").sum() == 4
    t0 = set(f[(f.fold == 0) & (f.split == "test")].perturbation)
    t1 = set(f[(f.fold == 1) & (f.split == "test")].perturbation)
    assert t0.isdisjoint(t1) and t0 | t1 == set(combos)
    # fold 0 trains and validates on fold 1's test combos, and vice versa
    assert set(f[(f.fold == 0) & f.split.isin(["train", "val"])].perturbation) - set(singles) == t1


def test_more_single_folds_than_perturbations_is_refused():
    with pytest.raises(PertcalInputError) as err:
        assign_folds_single(["control", "A", "B"], n_folds=3, val_fraction=0.1, seed=0, dataset="ds", source="p.h5ad")
    message = str(err.value)
    assert "dataset 'ds', file p.h5ad" in message and "processing.n_folds_single is 3" in message
    assert "only 2 perturbation(s)" in message and "at most 2" in message
    assert assign_folds_single(["control", "A", "B"], n_folds=2, val_fraction=0.1, seed=0)["fold"].nunique() == 2


def test_fewer_than_two_combos_is_refused():
    with pytest.raises(PertcalInputError, match=r"dataset 'ds', file p.h5ad: .*n_folds_combo is 2 but only 1 comb"):
        assign_folds_combo(["control", "A", "B", "A+B"], seed=0, dataset="ds", source="p.h5ad")
