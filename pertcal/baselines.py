"""Baselines as predictions (test perturbations × genes, mean log1p expression): the controls and simple models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd

from pertcal.degs import interpolation_alpha
from pertcal.harmonize import CONTROL, targets_of
from pertcal.io import PertcalInputError, read_rows
from pertcal.reduce import half_means, pooled_means

log = logging.getLogger(__name__)

KNOCKDOWN = {"CRISPRi", "KO", "Cas13"}


@dataclass(frozen=True)
class FoldData:
    """What a baseline may use for one (dataset, task, fold): pooled and td-half means of the perturbations read, the split."""

    means: pd.DataFrame  # (P, G) pooled means, control included when read
    td: pd.DataFrame  # (P, G) td-half means
    train: list[str]
    test: list[str]
    degs_td: ad.AnnData | None  # td-half DEG matrices (rows by perturbation name), for the interpolated duplicate
    modality: str
    val: list[str] = field(default_factory=list)

    @property
    def genes(self) -> pd.Index:
        return self.means.columns

    @property
    def control(self) -> pd.Series:
        return self.means.loc[CONTROL]

    @property
    def mean(self) -> pd.Series:
        """The negative control: average of the train perturbations' means, each perturbation weighted equally."""
        return self.means.loc[self.train].mean(axis=0)


def fold_split(folds: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """The fold's train and test perturbations, in folds-file order."""
    f = folds[folds["fold"] == fold]
    return f.loc[f["split"] == "train", "perturbation"].tolist(), f.loc[f["split"] == "test", "perturbation"].tolist()


def fold_val(folds: pd.DataFrame, fold: int) -> list[str]:
    """The fold's validation perturbations, in folds-file order."""
    return folds.loc[(folds["fold"] == fold) & (folds["split"] == "val"), "perturbation"].tolist()


def fold_data(stats: ad.AnnData, folds: pd.DataFrame, fold: int, degs_td: ad.AnnData | None, modality: str) -> FoldData:
    """Collect the fold's train/test perturbations (folds-file order) and the mean tables of the rows `stats` holds."""
    train, test = fold_split(folds, fold)
    return FoldData(
        means=pooled_means(stats), td=half_means(stats, "td"), train=train, test=test, degs_td=degs_td,
        modality=modality, val=fold_val(folds, fold),
    )


def _repeat(row: pd.Series, index: list[str]) -> pd.DataFrame:
    return pd.DataFrame(np.tile(row.to_numpy(), (len(index), 1)), index=index, columns=row.index)


def control(d: FoldData, **_) -> pd.DataFrame:
    """Mean of the control cells, for every test perturbation."""
    return _repeat(d.control, d.test)


def mean(d: FoldData, **_) -> pd.DataFrame:
    """The mean baseline (negative control)."""
    return _repeat(d.mean, d.test)


def technical_duplicate(d: FoldData, **_) -> pd.DataFrame:
    """The td-half mean of each test perturbation."""
    return d.td.loc[d.test]


def interpolated_duplicate(d: FoldData, **_) -> pd.DataFrame:
    """Positive control: α ⊙ td + (1 − α) ⊙ mean, α = 1 − BH-adjusted p of the td-half DEG test (0 where untested)."""
    alpha = interpolation_alpha(d.degs_td, d.test, d.genes)
    return alpha * d.td.loc[d.test] + (1 - alpha) * d.mean.to_numpy()[None, :]


def crispr_informed_mean(d: FoldData, **_) -> pd.DataFrame:
    """The mean baseline with each target gene set to 0 (knockdown/knockout) or doubled (CRISPRa)."""
    pred = mean(d)
    for pert in d.test:
        for target in targets_of(pert):
            if target in pred.columns:
                pred.loc[pert, target] = 2 * pred.loc[pert, target] if d.modality == "CRISPRa" else 0.0
    return pred


def additive(d: FoldData, **_) -> pd.DataFrame:
    """Combo A+B: y_A + y_B − control from the single perturbations' means.

    A single absent from the data (e.g. dropped by QC) adds no effect; such combos are logged and listed in
    `attrs["incomplete_combos"]` (as "A+B: missing A"), which `as_prediction` records in the file's uns.
    """
    effects = d.means.sub(d.control, axis=1)
    pred = _repeat(d.control, d.test)
    incomplete = []
    for pert in d.test:
        missing = [single for single in targets_of(pert) if single not in effects.index]
        for single in targets_of(pert):
            if single not in missing:
                pred.loc[pert] += effects.loc[single]
        if missing:
            incomplete.append(f"{pert}: missing {', '.join(missing)}")
    if incomplete:
        log.warning(
            "additive baseline: %d of %d test combos lack a single perturbation, whose effect is taken as zero: %s",
            len(incomplete), len(d.test), "; ".join(incomplete),
        )
        pred.attrs["incomplete_combos"] = incomplete
    return pred


def linear_fit(y_train: np.ndarray, fit_columns: np.ndarray, train_targets: np.ndarray, *, n_components: int, ridge: float):
    """Ahlmann-Eltze linear model on a genes × train perturbations pseudobulk `y_train`: (G (genes × K), W (K × K), b).

    G = the top-K principal axes in gene space of the train perturbations (sklearn PCA(K).fit(y_trainᵀ).components_ᵀ:
    left singular vectors of y_train with each gene centred on its mean over perturbations); then on the columns
    `fit_columns` (perturbations whose target gene `train_targets` is a read-out gene): Y, b = Y's row means,
    P = G[train_targets], W = (GᵀG + λI)⁻¹ Gᵀ (Y − b) P (PᵀP + λI)⁻¹.
    """
    centred_all = y_train - y_train.mean(axis=1, keepdims=True)
    u, _, _ = np.linalg.svd(centred_all, full_matrices=False)
    # Centring leaves rank ≤ perturbations − 1: an axis beyond it would be an arbitrary null direction.
    k = min(n_components, y_train.shape[1] - 1, y_train.shape[0])
    g = u[:, :k]
    y = y_train[:, fit_columns]
    b = y.mean(axis=1)
    p = g[train_targets]
    eye = np.eye(k)
    w = np.linalg.solve(g.T @ g + ridge * eye, g.T @ (y - b[:, None]) @ p) @ np.linalg.inv(p.T @ p + ridge * eye)
    return g, w, b


def linear(d: FoldData, *, n_components: int = 10, ridge: float = 0.1, **_) -> pd.DataFrame:
    """Linear baseline for unseen singles; test perturbations whose target is not a read-out gene get b."""
    genes = d.genes
    singles = [p for p in d.train if "+" not in p]
    fit = np.array([p in genes for p in singles], dtype=bool)
    y = d.means.loc[singles].to_numpy().T
    g, w, b = linear_fit(
        y, np.flatnonzero(fit), genes.get_indexer([p for p, f in zip(singles, fit) if f]),
        n_components=n_components, ridge=ridge,
    )
    pred = np.tile(b, (len(d.test), 1))
    known = np.array([p in genes for p in d.test], dtype=bool)
    if known.any():
        p_test = g[genes.get_indexer([p for p in d.test if p in genes])]
        pred[known] = (g @ w @ p_test.T).T + b
    return pd.DataFrame(pred, index=d.test, columns=genes)


# --- calibration controls: an alternative negative control and gaming predictors ------------------------------
# Never reported as models: they calibrate the metrics (pertcal.calibration), they are not contenders.


def mean_loo(d: FoldData, **_) -> pd.DataFrame:
    """Leave-one-out mean (scPertEval's negative control): for test perturbation i, the average of the pooled means of
    every other perturbation of the task (the fold's train ∪ val ∪ test, i.e. the folds file), each weighted equally."""
    pool = list(dict.fromkeys(d.train + d.val + d.test))
    if len(pool) < 2:
        raise PertcalInputError(f"mean_loo needs at least 2 perturbations in the folds file, got {len(pool)}")
    # (Σ_j x̄_j − x̄_i) / (P − 1): one sum for all test perturbations instead of P − 1 rows each
    total = d.means.loc[pool].sum(axis=0)
    return (total - d.means.loc[d.test]) / (len(pool) - 1)


def inflated_delta(d: FoldData, *, factor: float, **_) -> pd.DataFrame:
    """The mean baseline's shift from control scaled by `factor`: control + factor · (mean − control)."""
    return _repeat(d.control + factor * (d.mean - d.control), d.test)


def random_delta(d: FoldData, *, seed, **_) -> pd.DataFrame:
    """Control + Gaussian noise whose per-gene variance is that of the train perturbations' shifts from control.

    The variance comes from the training data (no test truth); `seed` (anything numpy's default_rng takes) fixes it.
    """
    shifts = d.means.loc[d.train] - d.control
    sd = shifts.std(axis=0, ddof=1).fillna(0.0).to_numpy()
    noise = np.random.default_rng(seed).standard_normal((len(d.test), len(d.genes))) * sd
    return pd.DataFrame(d.control.to_numpy() + noise, index=d.test, columns=d.genes)


def shuffled_truth(d: FoldData, **_) -> pd.DataFrame:
    """Another perturbation's td-half profile: test perturbation k gets the td mean of test perturbation k + 1
    (cyclically, a derangement); a fold with a single test perturbation gets the first train perturbation's mean."""
    if len(d.test) == 1:
        return _repeat(d.means.loc[d.train[0]], d.test)
    donors = d.test[1:] + d.test[:1]
    return pd.DataFrame(d.td.loc[donors].to_numpy(), index=d.test, columns=d.genes)


def global_shift(d: FoldData, **_) -> pd.DataFrame:
    """Control + one number for every gene: the average shift of the train perturbations over genes.

    The per-gene average shift would be the mean baseline itself; a gene-uniform shift probes the metrics whose
    reference point is a constant (R² is 0 for any prediction equal to the truth's own mean).
    """
    return _repeat(d.control + float((d.mean - d.control).mean()), d.test)


def double_log(d: FoldData, **_) -> pd.DataFrame:
    """log1p applied to an already log1p prediction (the mean baseline): the VCC's double-log trick."""
    return np.log1p(mean(d))


GAMING_PREDICTORS = {
    "inflated_delta_x2": partial(inflated_delta, factor=2.0),
    "inflated_delta_x5": partial(inflated_delta, factor=5.0),
    "random_delta": random_delta,
    "shuffled_truth": shuffled_truth,
    "global_shift": global_shift,
    "double_log": double_log,
}
CALIBRATION_CONTROLS = {"mean_loo": mean_loo, **GAMING_PREDICTORS}


BASELINES = {
    "control": control,
    "mean": mean,
    "technical_duplicate": technical_duplicate,
    "interpolated_duplicate": interpolated_duplicate,
    "linear": linear,
    "additive": additive,
    "crispr_informed_mean": crispr_informed_mean,
}


@dataclass(frozen=True)
class Reads:
    """What a baseline reads: pooled means of some perturbation sets, td means of the test ones, the td DEG test."""

    means: tuple[str, ...] = ()  # of "control", "train", "val", "test", "singles" (the test perturbations' single targets)
    td: bool = False
    degs_td: bool = False


READS = {
    "control": Reads(means=("control",)),
    "mean": Reads(means=("train",)),
    "technical_duplicate": Reads(td=True),
    "interpolated_duplicate": Reads(means=("train",), td=True, degs_td=True),
    "linear": Reads(means=("train",)),
    "additive": Reads(means=("control", "singles")),
    "crispr_informed_mean": Reads(means=("train",)),
    "mean_loo": Reads(means=("train", "val", "test")),
    **{name: Reads(means=("control", "train")) for name in ("inflated_delta_x2", "inflated_delta_x5", "random_delta", "global_shift")},
    "shuffled_truth": Reads(means=("train",), td=True),
    "double_log": Reads(means=("train",)),
}


def read_baseline_inputs(method: str, stats_path, folds: pd.DataFrame, fold: int, degs_td_path=None):
    """(stats, degs_td): the stats.h5ad rows (`sum`, both halves) and td DEG rows (`pval_adj`) `method` reads; degs_td
    is None for methods that do not use the td test."""
    reads = READS[method]
    train, test = fold_split(folds, fold)
    sets = {
        "control": [CONTROL], "train": train, "val": fold_val(folds, fold), "test": test,
        "singles": [t for p in test for t in targets_of(p)],
    }
    perturbations = [p for name in reads.means for p in sets[name]] + (test if reads.td else [])
    stats = read_rows(stats_path, where={"perturbation": perturbations}, layers=("sum",))
    degs_td = read_rows(degs_td_path, where={"perturbation": test}, layers=("pval_adj",)) if reads.degs_td else None
    return stats, degs_td


def as_prediction(pred: pd.DataFrame, *, method: str, dataset: str, task: str, fold: int) -> ad.AnnData:
    """Predictions AnnData (obs = test perturbations, var = genes, X float64) in the shared format.

    `pred.attrs` (notes such as the additive baseline's incomplete combos) go to uns. A prediction holding NaN or
    Inf is refused: every metric of it would be NaN, or a silent mean over fewer genes.
    """
    x = pred.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        names = ", ".join(pred.index[bad].astype(str)[:20]) + (", …" if bad.sum() > 20 else "")
        raise PertcalInputError(
            f"method {method!r}, dataset {dataset!r}, task {task}, fold {fold}: prediction holds NaN or Inf for "
            f"{bad.sum()} of {len(pred)} test perturbations ({names}); nothing written. Check the method's inputs "
            "and parameters (e.g. a model that diverged in training)"
        )
    obs = pd.DataFrame({"perturbation": pred.index.astype(str)}, index=pred.index.astype(str))
    out = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=pred.columns.astype(str)))
    out.uns.update({**pred.attrs, "method": method, "dataset": dataset, "task": task, "fold": int(fold)})
    return out


def predict_baseline(method: str, d: FoldData, **params) -> pd.DataFrame:
    """(test, G) prediction of one named baseline or calibration control."""
    return {**BASELINES, **CALIBRATION_CONTROLS}[method](d, **params)
