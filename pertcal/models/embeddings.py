"""Gene embedding tables (genes × dims) that condition the torch models, and perturbations encoded through them.

A perturbation is represented by the embedding rows of its target genes, never by a one-hot of seen labels,
so a model can predict a perturbation it never trained on as long as its targets have embeddings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pertcal.harmonize import targets_of
from pertcal.io import PertcalInputError
from pertcal.models.params import Implementation, choice, optional_file, positive_int

log = logging.getLogger(__name__)

PARAMS = {
    "embedding": choice("pca", ("pca", "random", "file")),
    "embedding_dim": positive_int(10),
    "embedding_file": optional_file(),
}
FILES = ("embedding_file",)


def check_embedding_params(given: dict, resolved: dict, *, where: str) -> dict:
    """Make `embedding_file` alone imply embedding: file; refuse contradictory or incomplete combinations."""
    out = dict(resolved)
    if resolved["embedding_file"] is not None and "embedding" not in given:
        out["embedding"] = "file"
    if out["embedding"] == "file" and out["embedding_file"] is None:
        raise PertcalInputError(f"{where}: hyperparameter 'embedding' is 'file' but 'embedding_file' is not set")
    if out["embedding"] != "file" and out["embedding_file"] is not None:
        raise PertcalInputError(
            f"{where}: hyperparameter 'embedding_file' is set but 'embedding' is {out['embedding']!r}; "
            "drop one of them"
        )
    return out


@dataclass(frozen=True)
class EmbeddingImplementation(Implementation):
    """A model conditioned on gene embeddings: `embedding_file` must exist and agree with `embedding`."""

    files = FILES

    def check(self, given: dict, params: dict, *, where: str) -> dict:
        return check_embedding_params(given, params, where=where)


def pca_embedding(pseudobulk: np.ndarray, genes: pd.Index, dim: int) -> pd.DataFrame:
    """(G, K) gene embedding: top-K principal component scores of the genes × train-perturbations pseudobulk.

    As the linear model of Ahlmann-Eltze et al.: rows centred (gene means removed), PCA of genes over
    perturbations; K is capped at the rank available. Scaled to unit RMS so the network inputs are O(1).
    `pseudobulk` is (P, G) mean log1p expression of the training perturbations.
    """
    y = pseudobulk.T - pseudobulk.T.mean(axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(y - y.mean(axis=0), full_matrices=False)
    k = min(dim, int((s > s.max() * 1e-10).sum()) if s.size else 0)
    if k < dim:
        log.info("PCA embedding: %d of the requested %d components exist (rank of the train pseudobulk)", k, dim)
    if k == 0:
        raise PertcalInputError("PCA embedding: the train pseudobulk has rank 0 (all training means are identical)")
    g = u[:, :k] * s[:k]
    return pd.DataFrame(g / np.sqrt(np.mean(g**2)), index=genes, columns=[f"pc{i + 1}" for i in range(k)])


def random_embedding(genes: pd.Index, dim: int, seed: int) -> pd.DataFrame:
    """(G, K) standard-normal embedding: the ablation with no information about the genes."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.standard_normal((len(genes), dim)), index=genes, columns=[f"r{i + 1}" for i in range(dim)])


def read_embedding(path: str, *, where: str) -> pd.DataFrame:
    """A user's gene × dims table (csv, tsv or parquet; first column or index = gene symbol), rows with NaN dropped."""
    suffix = "".join(Path(path).suffixes[-2:]).lower()
    try:
        if suffix.endswith(".parquet"):
            table = pd.read_parquet(path)
            if isinstance(table.index, pd.RangeIndex):
                table = table.set_index(table.columns[0])
        else:
            sep = "\t" if suffix.endswith((".tsv", ".tsv.gz", ".txt")) else ","
            table = pd.read_csv(path, sep=sep, index_col=0)
    except (OSError, ValueError, IndexError) as exc:
        raise PertcalInputError(f"{where}: embedding_file {path!r} cannot be read as a table: {exc}") from exc
    non_numeric = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric or table.shape[1] == 0:
        raise PertcalInputError(
            f"{where}: embedding_file {path!r} must hold numeric dimension columns after the gene column; "
            f"column {(non_numeric or ['<none>'])[0]!r} is not numeric"
        )
    table.index = table.index.astype(str)
    if table.index.duplicated().any():
        raise PertcalInputError(
            f"{where}: embedding_file {path!r} field 'gene' repeats {table.index[table.index.duplicated()][0]!r}"
        )
    nan_rows = table.isna().any(axis=1)
    if nan_rows.any():
        log.info("embedding_file %s: dropping %d genes with missing values", path, int(nan_rows.sum()))
    return table.loc[~nan_rows].astype(np.float64)


def gene_embedding(params: dict, pseudobulk: np.ndarray, genes: pd.Index, *, where: str) -> pd.DataFrame:
    """The embedding table the hyperparameters ask for (pca of the train pseudobulk, random, or a file)."""
    if params["embedding"] == "pca":
        return pca_embedding(pseudobulk, genes, params["embedding_dim"])
    if params["embedding"] == "random":
        return random_embedding(genes, params["embedding_dim"], params["seed"])
    return read_embedding(params["embedding_file"], where=where)


def encode(perturbations: list[str], table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Perturbations as sums over target genes' embedding rows.

    Returns `members` (P, R) float32 0/1 (perturbation × used row; control is an all-zero row), `rows` (R, K)
    float32 embedding rows used, and `ok` (P,) bool, False where some target gene has no embedding.
    """
    tgt = [targets_of(p) for p in perturbations]
    ok = np.array([all(g in table.index for g in t) for t in tgt], dtype=bool)
    used = sorted({g for t, good in zip(tgt, ok) if good for g in t})
    col = {g: j for j, g in enumerate(used)}
    members = np.zeros((len(perturbations), len(used)), dtype=np.float32)
    for i, (t, good) in enumerate(zip(tgt, ok)):
        if good:
            for g in t:
                members[i, col[g]] += 1.0
    rows = table.loc[used].to_numpy(dtype=np.float32) if used else np.zeros((0, table.shape[1]), dtype=np.float32)
    return members, rows, ok
