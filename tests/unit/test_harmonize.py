"""Named harmonizers and canonical labels on hand-built label sets with known answers."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from pertcal.harmonize import harmonize, targets_of
from pertcal.io import PertcalInputError

BASE = dict(perturbation_column="perturbation", control_labels=["control"], combo_delimiter="+",
            gene_symbol_column=None, harmonizers=[])


def make(obs: dict, genes=("A", "B", "C")):
    n = len(next(iter(obs.values())))
    return ad.AnnData(np.ones((n, len(genes)), dtype=np.float32), obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]),
                      var=pd.DataFrame({"gene_name": [g.lower() for g in genes]}, index=list(genes)))


def labels(adata):
    return list(adata.perturbation)


def test_adamson_recipe_cut_then_parenthesis_controls():
    a = make({"perturbation": ["AARS_pDS01", "(ctrl)_x", "*", "ATF4_1"]})
    out = harmonize(a.obs, a.var, dataset="d", source="f", **{**BASE, "harmonizers": [
        {"name": "cut_at_first", "sep": "_"}, {"name": "label_controls", "pattern": r"\("}]})
    assert labels(out) == ["AARS", "control", "*", "ATF4"]


def test_kaden_substring_replace_is_case_sensitive():
    a = make({"guide_target": ["non", "NONO", "A"]})
    out = harmonize(a.obs, a.var, dataset="d", source="f", **{**BASE, "perturbation_column": "guide_target",
                    "harmonizers": [{"name": "replace_substring", "old": "non", "new": "control"}]})
    assert labels(out) == ["control", "NONO", "A"]


def test_combo_delimiter_and_control_labels():
    a = make({"gene": ["A_B", "non-targeting", "C"]})
    out = harmonize(a.obs, a.var, dataset="d", source="f", **{**BASE, "perturbation_column": "gene",
                    "control_labels": ["non-targeting"], "combo_delimiter": "_"})
    assert labels(out) == ["A+B", "control", "C"]
    assert targets_of("A+B") == ["A", "B"] and targets_of("control") == []


def test_keep_cells_where_and_symbol_column():
    a = make({"perturbation": ["control", "A", "B"], "perturbation_2": ["Control", "Control", "IFNg"]})
    out = harmonize(a.obs, a.var, dataset="d", source="f", **{**BASE, "gene_symbol_column": "gene_name",
                    "harmonizers": [{"name": "keep_cells_where", "column": "perturbation_2", "equals": "Control"}]})
    assert labels(out) == ["control", "A"] and list(out.genes) == ["a", "b", "c"]
    assert list(out.keep) == [True, True, False]


def test_subsample_keeps_priority_list_and_controls():
    perts = ["control"] + [f"P{i}" for i in range(10)]
    a = make({"perturbation": perts * 2})
    out = harmonize(a.obs, a.var, dataset="d", source="f", **{**BASE, "harmonizers": [
        {"name": "subsample_perturbations", "max_perturbations": 4, "keep": ["P7", "P3"], "seed": 1}]})
    kept = set(labels(out))
    assert {"control", "P7", "P3"} <= kept and len(kept - {"control"}) == 4


@pytest.mark.parametrize("raw, case, message", [
    (["control", "A"], dict(perturbation_column="guide"), "perturbation column obs\\['guide'\\] is missing"),
    (["NT", "A"], dict(control_labels=["ctrl"]), "no control cells"),
    (["control", "A"], dict(gene_symbol_column="symbol"), "gene symbol column var\\['symbol'\\] is missing"),
    (["control", "A"], dict(harmonizers=[{"name": "keep_cells_where", "column": "arm", "equals": "x"}]),
     "needs obs column 'arm'"),
    (["control", "nan"], {}, "labelled as a missing value"),
    (["control", " "], {}, "labelled as a missing value"),
    (["control", "A"], dict(harmonizers=[{"name": "label_controls", "pattern": "("}]), "harmonizer 'label_controls'"),
    (["control", "A"], dict(harmonizers=[{"name": "cut_at_first", "sepp": "_"}]), "harmonizer 'cut_at_first'"),
])
def test_bad_input_names_dataset_file_field(raw, case, message):
    a = make({"perturbation": raw})
    with pytest.raises(PertcalInputError, match=message) as err:
        harmonize(a.obs, a.var, dataset="toy", source="raw.h5ad", **{**BASE, **case})
    assert "toy" in str(err.value) and "raw.h5ad" in str(err.value)


def test_duplicate_cell_names_made_unique():
    a = make({"perturbation": ["control", "A", "A"]})
    a.obs_names = ["x", "y", "x"]
    out = harmonize(a.obs, a.var, dataset="d", source="f", **BASE)
    assert out.perturbation.index.is_unique and list(out.perturbation.index[:2]) == ["x", "y"]
