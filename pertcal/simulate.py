"""Simulate a batch-free Perturb-seq screen with known effects: negative-binomial counts plus a truth table.

Model (docs/simulator.md): a cell c of condition p draws gene g from NB(mean μ_cg, inverse dispersion θ_g) with
μ_cg = q_g · L_c · exp(E_pg + Σ_k B_gk a_ck − ½ σ_a² Σ_k B_gk²), where q_g is the gene's baseline mean, L_c a
mean-one log-normal library factor, E the true log-fold effects (0 for control) and a_ck per-cell activities of
shared co-expression programs (mean-one factor, so q_g stays the exact control mean).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from pertcal.io import PertcalInputError

CONTROL = "control"
# Default on-target log-fold effect: ≈ 10% residual expression after knockdown, ≈ 12-fold activation.
MODALITY_TARGET_LFC = {"CRISPRi": -2.3, "KO": -2.3, "Cas13": -2.3, "CRISPRa": 2.5}
TARGET_LFC_JITTER_SDLOG = 0.15  # multiplicative, so the on-target effect keeps its sign

GENE_MEAN_MEDIAN = 1.0  # counts per cell at library factor 1; log-normal, so many genes sit far below
GENE_MEAN_SDLOG = 1.5
THETA_MEDIAN = 3.0
THETA_SDLOG = 0.6
# Expression-quantile window of target genes: knockdown screens target expressed genes; activation screens
# target weakly expressed ones (activating an abundant gene would swamp every cell's library).
TARGET_QUANTILES = {"knockdown": (0.3, 1.0), "activation": (0.1, 0.7)}

DEG_THRESHOLD = 0.1  # |true log-fold effect| at or above which truth marks a gene as a DEG
LFC_MIN = 0.3  # weakest downstream effect (× effect_size); the k-th strongest of n is LFC_MIN·(n/k)^LFC_DECAY
LFC_DECAY = 0.5
LFC_MAX = 2.5  # cap after effect_size scaling: ≈ 12-fold
LFC_JITTER_SD = 0.2  # per-gene log-normal jitter, clipped at ±2 SD so effect_size 1 never falls below DEG_THRESHOLD
WITHIN_PROGRAM_SHAPE = 2.0  # NB shape of DEG counts among perturbations of one program (CV ≈ 0.7)
PROGRAM_CORE = 25  # top genes of each program, also co-expressed across control cells
INTERACTION_SCALE = {"buffering": (-0.7, -0.3), "synergy": (0.5, 1.0)}

CELLS_SHAPE = 10.0  # NB shape of cells per perturbation (CV ≈ 0.3 at typical depths)
MIN_CELLS = 12  # the QC minimum; all perturbations reach it except the deliberately low ones
LOW_CELLS_MIN = 4
BARCODE_LENGTH = 16
COUNT_CHUNK = 1024  # cells sampled per block: bounds memory, fixed so the random stream is seed-determined


def simulate_perturbseq(
    *,
    n_genes: int,
    n_perturbations: int,
    n_combos: int = 0,
    cells_per_perturbation: float,
    n_control_cells: int,
    mean_degs: float,
    effect_size: float = 1.0,
    interaction_fraction: float = 0.1,
    modality: str = "CRISPRi",
    seed: int = 0,
    deg_shape: float = 0.3,
    private_fraction: float = 0.3,
    n_programs: int | None = None,
    target_lfc: float | None = None,
    library_size_sdlog: float = 0.4,
    program_activity_sd: float = 0.2,
    low_cell_fraction: float = 0.03,
) -> tuple[ad.AnnData, pd.DataFrame]:
    """Simulate raw counts (cells × n_genes CSR float32) and the long truth table of nonzero true log-fold effects."""
    _validate(locals())
    rng_genes, rng_effects, rng_cells = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    symbols = _gene_symbols(n_genes)
    base_mean, theta = _gene_parameters(rng_genes, n_genes)

    targets = _draw_targets(rng_effects, base_mean, n_perturbations, TARGET_QUANTILES[_direction(modality)])
    if n_programs is None:
        n_programs = int(np.clip(round(np.sqrt(n_perturbations)), 2, 20))
    module, ranking, program_sign, potency = _draw_programs(rng_effects, n_genes, targets, n_programs, deg_shape)
    single_effects = _single_effects(
        rng_effects, n_genes, targets, module, ranking, program_sign, potency,
        mean_degs=mean_degs, effect_size=effect_size, private_fraction=private_fraction,
        target_lfc=MODALITY_TARGET_LFC[modality] if target_lfc is None else target_lfc,
    )
    pairs = _draw_pairs(rng_effects, n_perturbations, n_combos)
    combo_effects = _combo_effects(
        rng_effects, single_effects, targets, pairs, interaction_fraction, effect_size, mean_degs
    )

    names = [CONTROL, *symbols[targets], *(f"{symbols[targets[a]]}+{symbols[targets[b]]}" for a, b in pairs)]
    effects = np.vstack([np.zeros((1, n_genes)), single_effects, combo_effects])
    n_cells = _cells_per_condition(rng_cells, n_control_cells, cells_per_perturbation, pairs, n_perturbations,
                                   low_cell_fraction)
    labels = rng_cells.permutation(np.repeat(np.arange(len(names)), n_cells))
    loadings = _program_loadings(ranking, program_sign, n_genes)
    counts = _sample_counts(rng_cells, labels, effects, base_mean, theta, loadings,
                            library_size_sdlog, program_activity_sd)

    obs = pd.DataFrame(
        {"perturbation": pd.Categorical.from_codes(labels, categories=names)},
        index=_barcodes(rng_cells, len(labels)),
    )
    var = pd.DataFrame({"sim_mean": base_mean, "sim_theta": theta}, index=symbols)
    return ad.AnnData(X=counts, obs=obs, var=var), _truth_table(names[1:], effects[1:], symbols)


def _validate(args: dict) -> None:
    """Raise PertcalInputError naming the simulate field that is out of range."""
    n_singles = args["n_perturbations"]
    checks = [
        ("n_genes", args["n_genes"] >= 10, "must be at least 10"),
        ("n_perturbations", n_singles >= 1, "must be at least 1"),
        ("n_combos", 0 <= args["n_combos"] <= n_singles * (n_singles - 1) // 2,
         f"must be between 0 and the {n_singles * (n_singles - 1) // 2} pairs of {n_singles} singles"),
        ("cells_per_perturbation", args["cells_per_perturbation"] > 0, "must be positive"),
        ("n_control_cells", args["n_control_cells"] >= 2, "must be at least 2"),
        ("mean_degs", 0 <= args["mean_degs"] < args["n_genes"] - 1, "must be in [0, n_genes - 1)"),
        ("effect_size", args["effect_size"] >= 0, "must be non-negative"),
        ("interaction_fraction", 0 <= args["interaction_fraction"] <= 1, "must be in [0, 1]"),
        ("modality", args["modality"] in MODALITY_TARGET_LFC, f"must be one of {sorted(MODALITY_TARGET_LFC)}"),
        ("deg_shape", args["deg_shape"] > 0, "must be positive"),
        ("private_fraction", 0 <= args["private_fraction"] <= 1, "must be in [0, 1]"),
        ("n_programs", args["n_programs"] is None or args["n_programs"] >= 1, "must be at least 1"),
        ("library_size_sdlog", args["library_size_sdlog"] >= 0, "must be non-negative"),
        ("program_activity_sd", args["program_activity_sd"] >= 0, "must be non-negative"),
        ("low_cell_fraction", 0 <= args["low_cell_fraction"] <= 1, "must be in [0, 1]"),
    ]
    for field, ok, rule in checks:
        if not ok:
            raise PertcalInputError(f"simulate field '{field}' = {args[field]!r} {rule}")
    window = TARGET_QUANTILES[_direction(args["modality"])]
    n_targetable = len(range(args["n_genes"])[_target_pool(args["n_genes"], window)])
    if n_singles > n_targetable:
        raise PertcalInputError(
            f"simulate field 'n_perturbations' = {n_singles} exceeds the {n_targetable} targetable genes "
            f"(an expression-quantile window of n_genes)"
        )


def _direction(modality: str) -> str:
    """'activation' or 'knockdown': what the modality does to its target."""
    return "activation" if MODALITY_TARGET_LFC[modality] > 0 else "knockdown"


def _gene_symbols(n_genes: int) -> np.ndarray:
    """(G,) gene symbols G00001, G00002, … (zero-padded to at least five digits)."""
    width = max(5, len(str(n_genes)))
    return np.array([f"G{i:0{width}d}" for i in range(1, n_genes + 1)], dtype=object)


def _gene_parameters(rng: np.random.Generator, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """(G,) baseline mean counts per cell and (G,) NB inverse dispersions θ, both log-normal."""
    base_mean = np.exp(rng.normal(np.log(GENE_MEAN_MEDIAN), GENE_MEAN_SDLOG, n_genes))
    theta = np.exp(rng.normal(np.log(THETA_MEDIAN), THETA_SDLOG, n_genes))
    return base_mean, theta


def _draw_targets(
    rng: np.random.Generator, base_mean: np.ndarray, n: int, quantiles: tuple[float, float]
) -> np.ndarray:
    """(n,) sorted gene indices of the single perturbations' targets, drawn within an expression-quantile window."""
    by_expression = np.argsort(base_mean, kind="stable")
    return np.sort(rng.choice(by_expression[_target_pool(len(base_mean), quantiles)], n, replace=False))


def _target_pool(n_genes: int, quantiles: tuple[float, float]) -> slice:
    """Slice of the genes sorted by expression that may be targeted."""
    low, high = quantiles
    return slice(int(np.ceil(low * n_genes)), int(np.floor(high * n_genes)))


def _draw_programs(
    rng: np.random.Generator, n_genes: int, targets: np.ndarray, n_programs: int, deg_shape: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Program of each target (n,), gene ranking (K, G), gene signs ±1 (K, G) and potency (K,) per program.

    A program's targets head its ranking with one shared sign, so a perturbation's program shows in how its target
    gene responds to the other perturbations (and co-varies in control cells): structure a model can learn.
    Potency (gamma, shape `deg_shape`) scales the program's DEG count; it is normalised so the average over the
    perturbations is exactly one, which keeps the panel's mean DEG count at `mean_degs`.
    """
    module = rng.choice(n_programs, size=len(targets), p=rng.dirichlet(np.full(n_programs, 2.0)))
    ranking = np.empty((n_programs, n_genes), dtype=np.int64)
    program_sign = rng.choice([-1.0, 1.0], size=(n_programs, n_genes))
    for k in range(n_programs):
        members = targets[module == k]
        others = rng.permutation(np.setdiff1d(np.arange(n_genes), members))
        ranking[k] = np.concatenate([rng.permutation(members), others])
        program_sign[k, members] = program_sign[k, members[0]] if len(members) else 1.0
    # Floored: tiny gamma shapes can underflow to exactly zero.
    potency = np.maximum(rng.gamma(deg_shape, 1.0, n_programs), np.finfo(float).tiny)
    return module, ranking, program_sign, potency / potency[module].mean()


def _single_effects(
    rng: np.random.Generator,
    n_genes: int,
    targets: np.ndarray,
    module: np.ndarray,
    ranking: np.ndarray,
    program_sign: np.ndarray,
    potency: np.ndarray,
    *,
    mean_degs: float,
    effect_size: float,
    private_fraction: float,
    target_lfc: float,
) -> np.ndarray:
    """(n, G) true log-fold effects of the singles.

    DEG count ~ NB(mean_degs × program potency, shape WITHIN_PROGRAM_SHAPE). Downstream genes: the top of the
    program's ranking (program signs) plus a private random set (random signs); the target gene itself gets the
    on-target knockdown/activation.
    """
    n_degs = _stratified_nb(rng, mean_degs * potency[module], module, cap=n_genes - 1)
    effects = np.zeros((len(targets), n_genes))
    for i, (target, k, n) in enumerate(zip(targets, module, n_degs)):
        magnitude = _ranked_magnitudes(rng, n, effect_size)
        n_program = int(round((1 - private_fraction) * n))
        from_program = np.zeros(n, dtype=bool)
        from_program[rng.choice(n, n_program, replace=False)] = True
        program_genes = ranking[k][ranking[k] != target][:n_program]
        free = np.ones(n_genes, dtype=bool)
        free[program_genes] = free[target] = False
        private_genes = rng.choice(np.flatnonzero(free), n - n_program, replace=False)
        effects[i, program_genes] = program_sign[k, program_genes] * magnitude[from_program]
        effects[i, private_genes] = rng.choice([-1.0, 1.0], n - n_program) * magnitude[~from_program]
        effects[i, target] = target_lfc * np.exp(rng.normal(0.0, TARGET_LFC_JITTER_SDLOG))
    return effects


def _stratified_nb(rng: np.random.Generator, mean: np.ndarray, module: np.ndarray, cap: int) -> np.ndarray:
    """(n,) NB(mean per item, shape WITHIN_PROGRAM_SHAPE) draws at quantiles stratified within each program.

    Stratifying keeps each program's realised mean DEG count close to its expectation, so even a small panel's
    average lands near `mean_degs`.
    """
    quantiles = np.empty(len(module))
    for k in np.unique(module):
        members = np.flatnonzero(module == k)
        quantiles[members] = (rng.permutation(len(members)) + rng.uniform(size=len(members))) / len(members)
    shape = WITHIN_PROGRAM_SHAPE
    draws = stats.nbinom.ppf(quantiles, shape, shape / (shape + np.maximum(mean, 1e-12)))
    return np.minimum(np.where(mean > 0, draws, 0), cap).astype(np.int64)


def _ranked_magnitudes(rng: np.random.Generator, n: int, effect_size: float) -> np.ndarray:
    """(n,) decreasing |log-fold| effects: few strong, many near LFC_MIN (heavy-tailed like real DEG logFCs)."""
    rank = np.arange(1, n + 1)
    jitter = np.exp(np.clip(rng.normal(0.0, LFC_JITTER_SD, n), -2 * LFC_JITTER_SD, 2 * LFC_JITTER_SD))
    return np.minimum(effect_size * LFC_MIN * (n / rank) ** LFC_DECAY * jitter, LFC_MAX)


def _draw_pairs(rng: np.random.Generator, n_singles: int, n_combos: int) -> np.ndarray:
    """(n_combos, 2) sorted index pairs (a < b) of singles combined in the combos."""
    first, second = np.triu_indices(n_singles, k=1)
    chosen = np.sort(rng.choice(len(first), n_combos, replace=False))
    return np.column_stack([first[chosen], second[chosen]])


def _combo_effects(
    rng: np.random.Generator,
    single_effects: np.ndarray,
    targets: np.ndarray,
    pairs: np.ndarray,
    interaction_fraction: float,
    effect_size: float,
    mean_degs: float,
) -> np.ndarray:
    """(n_combos, G) effects: the sum of the two singles' log effects, plus an interaction for a minority.

    An interacting pair scales its summed downstream effect by 1 + γ (γ buffering in [-0.7, -0.3] or synergy in
    [0.5, 1], clipped to ±2·LFC_MAX) and gains a few new DEGs of its own; on-target effects stay additive.
    """
    effects = single_effects[pairs[:, 0]] + single_effects[pairs[:, 1]]
    n_interacting = int(round(interaction_fraction * len(pairs)))
    for c in np.sort(rng.choice(len(pairs), n_interacting, replace=False)):
        downstream = np.ones(effects.shape[1], dtype=bool)
        downstream[targets[pairs[c]]] = False
        low, high = INTERACTION_SCALE[rng.choice(sorted(INTERACTION_SCALE))]
        # Clipped to the additive range (two singles at LFC_MAX) so synergy cannot swamp the cell's library.
        scaled = effects[c, downstream] * (1.0 + rng.uniform(low, high))
        effects[c, downstream] = np.clip(scaled, -2 * LFC_MAX, 2 * LFC_MAX)
        n_new = 1 + rng.poisson(max(5.0, 0.2 * mean_degs))
        untouched = np.flatnonzero(downstream & (effects[c] == 0))
        new_genes = rng.choice(untouched, min(n_new, len(untouched)), replace=False)
        effects[c, new_genes] = rng.choice([-1.0, 1.0], len(new_genes)) * _ranked_magnitudes(
            rng, len(new_genes), effect_size
        )
    return effects


def _cells_per_condition(
    rng: np.random.Generator,
    n_control_cells: int,
    cells_per_perturbation: float,
    pairs: np.ndarray,
    n_singles: int,
    low_cell_fraction: float,
) -> np.ndarray:
    """(1 + n_singles + n_combos,) cell counts: control first, then NB(cells_per_perturbation) floored at MIN_CELLS.

    A few perturbations get fewer than MIN_CELLS so QC has something to drop; singles that are part of a combo are
    spared so every combo keeps both of its singles.
    """
    n_perturbations = n_singles + len(pairs)
    n_cells = np.maximum(
        rng.negative_binomial(CELLS_SHAPE, CELLS_SHAPE / (CELLS_SHAPE + cells_per_perturbation), n_perturbations),
        MIN_CELLS,
    )
    spared = np.zeros(n_perturbations, dtype=bool)
    spared[np.unique(pairs)] = True
    candidates = np.flatnonzero(~spared)
    n_low = min(max(1, int(round(low_cell_fraction * n_perturbations))), len(candidates)) if low_cell_fraction else 0
    low = rng.choice(candidates, n_low, replace=False)
    n_cells[low] = rng.integers(LOW_CELLS_MIN, MIN_CELLS, n_low)
    return np.concatenate([[n_control_cells], n_cells])


def _program_loadings(ranking: np.ndarray, program_sign: np.ndarray, n_genes: int) -> np.ndarray:
    """(G, K) signed ±1 loadings of each program's core genes on its per-cell activity (0 elsewhere)."""
    loadings = np.zeros((n_genes, len(ranking)))
    for k, order in enumerate(ranking):
        core = order[:PROGRAM_CORE]
        loadings[core, k] = program_sign[k, core]
    return loadings


def _sample_counts(
    rng: np.random.Generator,
    labels: np.ndarray,
    effects: np.ndarray,
    base_mean: np.ndarray,
    theta: np.ndarray,
    loadings: np.ndarray,
    library_size_sdlog: float,
    program_activity_sd: float,
) -> sp.csr_matrix:
    """(N, G) CSR float32 NB counts (gamma–Poisson) for cells whose condition rows of `effects` are `labels`."""
    n_cells = len(labels)
    log_library = rng.normal(-0.5 * library_size_sdlog**2, library_size_sdlog, n_cells)
    activity = rng.normal(0.0, program_activity_sd, (n_cells, loadings.shape[1]))
    # Centred so exp(activity term) has mean one and base_mean stays the exact control mean.
    activity_offset = 0.5 * program_activity_sd**2 * (loadings**2).sum(axis=1)
    log_base = np.log(base_mean) - activity_offset
    blocks = []
    for start in range(0, n_cells, COUNT_CHUNK):
        rows = slice(start, start + COUNT_CHUNK)
        log_mu = log_base + effects[labels[rows]] + log_library[rows, None] + activity[rows] @ loadings.T
        counts = rng.poisson(rng.gamma(theta, np.exp(log_mu) / theta))
        blocks.append(sp.csr_matrix(counts.astype(np.float32)))
    return sp.vstack(blocks, format="csr")


def _barcodes(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) unique 10x-style barcodes ('ACGT…-1')."""
    codes = rng.choice(4**BARCODE_LENGTH, n, replace=False)
    digits = (codes[:, None] >> (2 * np.arange(BARCODE_LENGTH - 1, -1, -1))) & 3
    letters = np.frombuffer(b"ACGT", dtype="S1")[digits]
    return np.array([row.tobytes().decode() + "-1" for row in letters], dtype=object)


def _truth_table(names: list[str], effects: np.ndarray, symbols: np.ndarray) -> pd.DataFrame:
    """Long table of the nonzero true effects: perturbation, gene, effect (natural-log fold of the mean), is_deg."""
    rows, cols = np.nonzero(effects)
    effect = effects[rows, cols]
    return pd.DataFrame(
        {
            "perturbation": np.asarray(names, dtype=object)[rows],
            "gene": symbols[cols],
            "effect": effect,
            "is_deg": np.abs(effect) >= DEG_THRESHOLD,
        }
    )
