"""GSEA self-enrichment: is a perturbed regulator's own target set enriched at one end of a ranking of genes?

Preranked GSEA (Subramanian et al. 2005, weight p = 1) with the gene-set permutation null, nominal p and NES as
gseapy's prerank computes them; each ranking (the gt-half t statistic, or a method's predicted Δ against control)
is tested against the target sets of its own perturbation's targets only.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import anndata as ad
import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from pertcal.degs import deg_matrix
from pertcal.harmonize import targets_of
from pertcal.io import PertcalInputError, atomic_path, read_rows
from pertcal.stats import order_methods

log = logging.getLogger(__name__)

GT_METHOD = "gt_half"  # the method name of the rankings by the gt-half t statistic (the observed response)
SIMULATED_TERM = "{} SIMULATED"  # term name of a simulated regulator's set, Enrichr-style "<symbol> <source>"
RESULT_COLUMNS = ["task", "fold", "method", "perturbation", "gene_set", "set_size", "es", "nes", "pval"]


# --- gene-set libraries ----------------------------------------------------------------------------------------


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """{term: genes} of a GMT file (term, description, genes…; tab-separated). Enrichr's 'GENE,1.0' loses its weight."""
    sets: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split("\t")
            genes = [g.split(",")[0].strip() for g in fields[2:]]
            genes = [g for g in genes if g]
            if len(fields) < 3 or not fields[0].strip() or not genes:
                raise PertcalInputError(
                    f"gene-set file {path}, line {number}: expected 'term<TAB>description<TAB>gene…' with at least "
                    f"one gene, got {line[:80]!r}"
                )
            term = fields[0].strip()
            if term in sets:
                raise PertcalInputError(f"gene-set file {path}, line {number}: term {term!r} appears twice")
            sets[term] = genes
    if not sets:
        raise PertcalInputError(f"gene-set file {path}: no gene sets")
    return sets


def write_gmt(sets: Mapping[str, list[str]], path: str | os.PathLike) -> None:
    """Write {term: genes} as a GMT file with empty descriptions (Enrichr's layout), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{term}\t\t" + "\t".join(genes) + "\n" for term, genes in sets.items()), encoding="utf-8")


def regulator_sets(library: Mapping[str, list[str]]) -> dict[str, frozenset[str]]:
    """{regulator symbol: genes}, upper case: the union of the terms whose first word names the regulator.

    Enrichr's consensus library names terms '<symbol> <source>' ('ATF2 ENCODE', 'ATF2 CHEA'): both count for ATF2.
    """
    sets: dict[str, set[str]] = {}
    for term, genes in library.items():
        sets.setdefault(term.split()[0].upper(), set()).update(g.upper() for g in genes)
    return {symbol: frozenset(genes) for symbol, genes in sets.items()}


def simulated_target_sets(truth: pd.DataFrame) -> dict[str, list[str]]:
    """{'<target> SIMULATED': true downstream DEGs, in truth order} of every single perturbation of a simulator truth
    table (perturbation, gene, effect, is_deg); the target's own on-target row is not one of its targets."""
    missing = {"perturbation", "gene", "is_deg"} - set(truth.columns)
    if missing:
        raise PertcalInputError(f"simulator truth table lacks column(s) {sorted(missing)}")
    pert, gene = truth["perturbation"].astype(str), truth["gene"].astype(str)
    keep = ~pert.str.contains("+", regex=False) & truth["is_deg"].astype(bool) & (gene != pert)
    return {SIMULATED_TERM.format(p): g.tolist() for p, g in gene[keep].groupby(pert[keep], sort=False)}


# --- preranked GSEA ------------------------------------------------------------------------------------------


class RandomSets:
    """Random gene sets of the permutation null, as sorted rank positions, seeded by (seed, number of genes).

    Each permutation is one random ordering of the G rank positions; the random set of size k is its first k
    positions. Every set size then shares one draw per ranking length (rankings of one length share their nulls,
    as gseapy's sets share its seed), and a k-set costs a sort of k positions instead of a draw over G. Memory: an
    int32 (n_permutations, G) ordering per ranking length and an int32 (n_permutations, k) array per set size used
    (a library has one set per regulator, so at most one size each).
    """

    def __init__(self, n_permutations: int, seed: int):
        self.n_permutations, self.seed = n_permutations, seed
        self._orderings: dict[int, np.ndarray] = {}
        self._positions: dict[tuple[int, int], np.ndarray] = {}

    def positions(self, n_genes: int, set_size: int) -> np.ndarray:
        """(n_permutations, set_size) int: each row a uniformly random set of rank positions, sorted."""
        key = (n_genes, set_size)
        if key not in self._positions:
            if n_genes not in self._orderings:
                rng = np.random.default_rng([self.seed, n_genes])
                ordering = np.tile(np.arange(n_genes, dtype=np.int32), (self.n_permutations, 1))
                self._orderings[n_genes] = rng.permuted(ordering, axis=1)
            self._positions[key] = np.sort(self._orderings[n_genes][:, :set_size], axis=1)
        return self._positions[key]


def enrichment_scores(weights: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(S,) enrichment scores of S gene sets given as (S, k) sorted rank positions in one ranking.

    `weights`: (G,) |ranking metric| in rank order (descending metric). The running sum steps up by weight / Σ set
    weights at a member and down by 1 / (G − k) at a non-member; ES is its largest deviation from 0 (the maximum
    when it exceeds |minimum|). It peaks just after a member and dips just before one, so only members are visited.
    """
    n_genes, k = len(weights), positions.shape[1]
    hit = weights[positions]
    total = hit.sum(axis=1, keepdims=True)
    if not total.all():
        # a set whose members all score 0 steps uniformly (fgsea's convention; the weighted walk is undefined)
        hit[total[:, 0] == 0] = 1.0
        total[total == 0] = k
    hit /= total
    walk = np.cumsum(hit, axis=1)
    walk -= (positions - np.arange(k)) / (n_genes - k)  # the misses before each member
    high = walk.max(axis=1)
    walk -= hit  # just before each member
    low = walk.min(axis=1)
    return np.where(high > -low, high, low)


def normalize(es: float, null: np.ndarray) -> tuple[float, float]:
    """(NES, nominal p) of `es` against its null ESs: ES over the mean null ES of its sign; p = the share of the
    null of that sign at least as extreme (1 when there is none). gseapy's (and GSEA's) definitions."""
    same_sign = null[null < 0] if es < 0 else null[null >= 0]
    if len(same_sign) == 0:
        return float(np.sign(es) or 1.0), 1.0
    nes = es / abs(same_sign.mean())
    extreme = (same_sign <= es) if es < 0 else (same_sign >= es)
    return float(nes), float(extreme.mean())


def prerank(values: np.ndarray, member: np.ndarray, *, null: RandomSets, min_size: int = 1) -> dict:
    """Preranked GSEA of one gene set on one ranking: {set_size, es, nes, pval}; NaN statistics below `min_size`.

    `values`: (G,) ranking metric (NaN = gene not ranked; ties keep the given gene order); `member`: (G,) bool,
    the gene is in the set; only ranked members count (set_size). `null`: the random sets ES is compared with.
    """
    ranked = ~np.isnan(values)
    values, member = values[ranked], member[ranked]
    order = np.argsort(-values, kind="stable")
    k = int(member.sum())
    if k < max(min_size, 1) or k == len(values):
        return {"set_size": k, "es": np.nan, "nes": np.nan, "pval": np.nan}
    weights = np.abs(values[order])
    es = float(enrichment_scores(weights, np.flatnonzero(member[order])[None, :])[0])
    nes, pval = normalize(es, enrichment_scores(weights, null.positions(len(values), k)))
    return {"set_size": k, "es": es, "nes": nes, "pval": pval}


def self_enrichment(
    scores: pd.DataFrame, sets: Mapping[str, frozenset[str]], *, null: RandomSets, min_set_size: int
) -> pd.DataFrame:
    """Long table perturbation, gene_set, set_size, es, nes, pval: each row of `scores` (P × G ranking metric,
    index = perturbation labels, NaN = gene not ranked) tested against the set of each of its targets (a combo
    A+B against A's and B's) that `sets` ({symbol: genes}, upper case) holds; statistics are NaN for a set with
    fewer than `min_set_size` ranked genes (the row still says which regulator was not tested, and why)."""
    genes = scores.columns.astype(str).str.upper()
    members: dict[str, np.ndarray] = {}
    rows = []
    for pert, values in zip(scores.index, scores.to_numpy(dtype=np.float64)):
        if not np.any(np.nan_to_num(values)):
            continue  # nothing ranks: a method that predicts no change (e.g. where Δ = 0)
        for target in (t.upper() for t in targets_of(str(pert))):
            if target not in sets:
                continue
            if target not in members:
                members[target] = genes.isin(list(sets[target]))
            result = prerank(values, members[target], null=null, min_size=min_set_size)
            rows.append({"perturbation": str(pert), "gene_set": target, **result})
    return pd.DataFrame(rows, columns=["perturbation", "gene_set", "set_size", "es", "nes", "pval"])


def add_fdr(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with column fdr: nominal p BH-adjusted over the tests of one ranking source (task, method)."""
    fdr = table.groupby(["task", "method"], sort=False)["pval"].transform(_benjamini_hochberg)
    return table.assign(fdr=fdr.to_numpy(dtype=np.float64))


def _benjamini_hochberg(p: pd.Series) -> pd.Series:
    """BH-adjusted p-values; NaN (untested) stays NaN and is not counted."""
    finite = p.notna()
    out = pd.Series(np.nan, index=p.index)
    if finite.any():
        out[finite] = multipletests(p[finite].to_numpy(dtype=np.float64), method="fdr_bh")[1]
    return out


def self_enrichment_table(
    degs_gt_path, controls: Mapping[tuple[str, int], str], predictions: Mapping[tuple[str, int, str], str],
    sets: Mapping[str, frozenset[str]], *, n_permutations: int, min_set_size: int, seed: int,
) -> pd.DataFrame:
    """Self-enrichment of one dataset: task, fold, method, perturbation, gene_set, set_size, es, nes, pval, fdr.

    Per (task, fold), the fold's test perturbations (the rows of its control prediction, `controls` path) are ranked
    by the gt-half t statistic (method `gt_half`, from the degs_gt.h5ad `score` layer) and by each method's predicted
    Δ against control (`predictions`: (task, fold, method) → prediction path). One prediction is read at a time.
    """
    degs_gt = read_rows(degs_gt_path, layers=("score",))
    null = RandomSets(n_permutations, seed)
    frames = []
    for (task, fold), control_path in controls.items():
        control = ad.read_h5ad(control_path)
        gt = deg_matrix(degs_gt, control.obs_names, control.var_names, "score", np.nan)
        rankings = {GT_METHOD: pd.DataFrame(gt, index=control.obs_names, columns=control.var_names)}
        for (p_task, p_fold, method), path in predictions.items():
            if (p_task, p_fold) == (task, fold):
                rankings[method] = predicted_delta(ad.read_h5ad(path), control, source=path)
        for method, scores in rankings.items():
            table = self_enrichment(scores, sets, null=null, min_set_size=min_set_size)
            frames.append(table.assign(task=task, fold=np.int64(fold), method=method))
            log.info("%s fold %s, %s: %d regulator sets", task, fold, method, len(table))
    table = pd.concat(frames, ignore_index=True)[RESULT_COLUMNS].astype({"set_size": np.int64})
    return add_fdr(table)


def summarize_self_enrichment(table: pd.DataFrame, *, alpha: float) -> pd.DataFrame:
    """Per dataset and method (gt_half first): tested sets, median NES, share with FDR < `alpha` (either sign) and
    share whose NES has the sign of the gt-half NES of the same perturbation and set (`table`: the tables of
    self_enrichment_table with a dataset column)."""
    tested = table[table["nes"].notna()]
    gt = tested[tested["method"] == GT_METHOD].set_index(["dataset", "task", "perturbation", "gene_set"])["nes"]
    keys = pd.MultiIndex.from_frame(tested[["dataset", "task", "perturbation", "gene_set"]])
    tested = tested.assign(agrees=np.sign(tested["nes"].to_numpy()) == np.sign(gt.reindex(keys).to_numpy()))
    rows = []
    for dataset, per_dataset in tested.groupby("dataset", sort=False):
        for method in [GT_METHOD, *order_methods(set(per_dataset["method"]) - {GT_METHOD})]:
            d = per_dataset[per_dataset["method"] == method]
            if d.empty:
                continue
            rows.append({
                "dataset": dataset, "method": method, "n_tested": len(d), "median_nes": d["nes"].median(),
                "fraction_significant": (d["fdr"] < alpha).mean(), "fraction_sign_as_gt": d["agrees"].mean(),
            })
    return pd.DataFrame(rows, columns=["dataset", "method", "n_tested", "median_nes", "fraction_significant",
                                       "fraction_sign_as_gt"])


def predicted_delta(prediction, control, *, source: str) -> pd.DataFrame:
    """(P, G) predicted Δ against control: a prediction's X minus the control prediction of the same fold, aligned
    by perturbation and gene name (both AnnData: test perturbations × genes)."""
    missing = prediction.obs_names.difference(control.obs_names)
    absent = prediction.var_names.difference(control.var_names)
    if len(missing) or len(absent):
        raise PertcalInputError(
            f"{source}: perturbations {list(missing[:5])} / genes {list(absent[:5])} are not in the control prediction "
            "of the same fold"
        )
    pred = _dense(prediction.X)
    ctrl = _dense(control[prediction.obs_names, prediction.var_names].X)
    if not (np.isfinite(pred).all() and np.isfinite(ctrl).all()):
        raise PertcalInputError(f"{source}: X has NaN or infinite predictions")
    return pd.DataFrame(pred - ctrl, index=prediction.obs_names, columns=prediction.var_names)


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
