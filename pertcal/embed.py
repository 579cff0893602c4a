"""Gene embedding tables (gene symbol × dims, float32) from foundation-model checkpoints and published tables.

Every function reads local files only: the checkpoints are fetched beforehand by rule fetch_resource, and the
Hugging Face libraries are put in offline mode before they are imported, so a compute node without internet never
tries a download. The output of each is the table rule embed_genes writes (pertcal.models.embeddings reads it).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from pertcal.harmonize import targets_of
from pertcal.io import PertcalInputError

log = logging.getLogger(__name__)

# Set before transformers / huggingface_hub are imported (they read them at import): no network, ever.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
# ESM2 was trained on crops of at most 1,024 tokens: 1,022 residues between <cls> and <eos>.
ESM2_MAX_RESIDUES = 1022


def _offline():
    os.environ.update(OFFLINE_ENV)


def embedding_frame(genes, matrix: np.ndarray) -> pd.DataFrame:
    """(G, K) float32 table indexed by gene symbol (sorted), columns dim1..dimK: the format of every source."""
    table = pd.DataFrame(
        np.asarray(matrix, dtype=np.float32),
        index=pd.Index([str(g) for g in genes], name="gene"),
        columns=[f"dim{i + 1}" for i in range(matrix.shape[1])],
    )
    if table.index.duplicated().any():
        raise PertcalInputError(f"gene embedding: gene {table.index[table.index.duplicated()][0]!r} appears twice")
    if not np.isfinite(table.to_numpy()).all():
        raise PertcalInputError("gene embedding: non-finite values (NaN or inf) in the embedding table")
    return table.sort_index()


def embedding_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its gene index as the first column `gene` (what pertcal.io.write_parquet keeps)."""
    return table.reset_index()


# --- ESM2: mean-pooled final-layer embedding of each gene's protein -------------------------------------------


def read_proteome(path: str | os.PathLike) -> dict[str, str]:
    """{gene symbol: protein sequence} from a UniProt FASTA (plain or .gz), one protein per gene.

    The symbol is the header's GN= field; entries without one are skipped. Where several entries name the same gene
    the reviewed (sp|) one wins, then the longest, then the smallest accession, so the choice is deterministic.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    entries, header, chunks = [], None, []
    with opener(path, "rt") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    entries.append((header, "".join(chunks)))
                header, chunks = line[1:], []
            elif line:
                chunks.append(line)
    if header is not None:
        entries.append((header, "".join(chunks)))
    if not entries:
        raise PertcalInputError(f"proteome {path}: no FASTA entries")
    best: dict[str, tuple] = {}
    for head, seq in entries:
        gene = next((f[3:] for f in head.split() if f.startswith("GN=")), None)
        if gene is None or not seq:
            continue
        parts = head.split()[0].split("|")
        reviewed = parts[0] == "sp"
        accession = parts[1] if len(parts) > 1 else parts[0]
        rank = (not reviewed, -len(seq), accession)
        if gene not in best or rank < best[gene][0]:
            best[gene] = (rank, seq)
    if not best:
        raise PertcalInputError(f"proteome {path}: no entry carries a gene symbol (GN= in the header)")
    return {gene: seq for gene, (_, seq) in sorted(best.items())}


def _windows(length: int, width: int) -> list[tuple[int, int]]:
    """Split [0, length) into the fewest near-equal windows of at most `width` residues."""
    n = -(-length // width)
    bounds = np.linspace(0, length, n + 1).round().astype(int)
    return list(zip(bounds[:-1], bounds[1:]))


def esm2_embeddings(
    checkpoint_dir: str | os.PathLike,
    sequences: dict[str, str],
    *,
    max_residues: int = ESM2_MAX_RESIDUES,
    batch_size: int = 8,
    device: str = "cpu",
) -> pd.DataFrame:
    """(G, hidden) mean over residues of ESM2's final-layer states, per gene's protein.

    `checkpoint_dir` holds a transformers ESM checkpoint (config.json, weights, vocab.txt). A protein longer than
    `max_residues` is cut into near-equal windows, each embedded alone with its own <cls>/<eos>; the residue states
    of all windows are averaged (so every residue counts once, whatever the cut). Identical sequences are embedded
    once, so they get identical rows. Windows are batched by exact length: no padding enters any computation.
    """
    _offline()
    import torch
    from transformers import EsmModel, EsmTokenizer

    tokenizer = EsmTokenizer.from_pretrained(checkpoint_dir, local_files_only=True)
    model = EsmModel.from_pretrained(checkpoint_dir, local_files_only=True, add_pooling_layer=False).to(device).eval()
    unique = sorted(set(sequences.values()))
    windows = [(u, a, b) for u, seq in enumerate(unique) for a, b in _windows(len(seq), max_residues)]
    sums = np.zeros((len(unique), model.config.hidden_size), dtype=np.float64)
    by_length: dict[int, list] = {}
    for w in windows:
        by_length.setdefault(w[2] - w[1], []).append(w)
    with torch.inference_mode():
        for length in sorted(by_length):
            group = by_length[length]
            for start in range(0, len(group), batch_size):
                batch = group[start : start + batch_size]
                ids = tokenizer([unique[u][a:b] for u, a, b in batch], return_tensors="pt")["input_ids"]
                if ids.shape[1] != length + 2:
                    raise PertcalInputError(
                        f"ESM2 checkpoint {checkpoint_dir}: its tokenizer did not map one residue to one token"
                    )
                states = model(input_ids=ids.to(device)).last_hidden_state[:, 1:-1]  # drop <cls>, <eos>
                residue_sums = states.double().sum(dim=1).cpu().numpy()
                for (u, _, _), row in zip(batch, residue_sums):
                    sums[u] += row
    per_unique = sums / np.array([len(s) for s in unique], dtype=np.float64)[:, None]
    index = {s: i for i, s in enumerate(unique)}
    genes = sorted(sequences)
    log.info("ESM2: %d genes, %d distinct proteins, %d windows", len(genes), len(unique), len(windows))
    return embedding_frame(genes, per_unique[[index[sequences[g]] for g in genes]])


# --- Geneformer: the gene token's input embedding --------------------------------------------------------------


def _pickle(path) -> dict:
    with open(path, "rb") as fh:
        obj = pickle.load(fh)  # the published dictionaries are pickles; they come pinned by sha256
    if not isinstance(obj, dict):
        raise PertcalInputError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return obj


def geneformer_embeddings(
    checkpoint_dir: str | os.PathLike, token_dictionary: str | os.PathLike, gene_name_id: str | os.PathLike
) -> pd.DataFrame:
    """(G, hidden) rows of Geneformer's input (token) embedding, one per gene symbol with a token.

    `token_dictionary` maps Ensembl gene ID → token index, `gene_name_id` symbol → Ensembl ID (Geneformer's pickles);
    the model is a transformers BertForMaskedLM checkpoint directory.
    """
    _offline()
    from transformers import BertForMaskedLM

    model = BertForMaskedLM.from_pretrained(checkpoint_dir, local_files_only=True)
    weight = model.get_input_embeddings().weight.detach().cpu().numpy()
    tokens, names = _pickle(token_dictionary), _pickle(gene_name_id)
    pairs = sorted((str(sym), int(tokens[ens])) for sym, ens in names.items() if ens in tokens)
    bad = [t for _, t in pairs if not 0 <= t < weight.shape[0]]
    if bad:
        raise PertcalInputError(
            f"Geneformer {token_dictionary}: token {bad[0]} is outside the checkpoint's vocabulary of {weight.shape[0]}"
        )
    if not pairs:
        raise PertcalInputError(f"Geneformer: no symbol of {gene_name_id} has a token in {token_dictionary}")
    log.info("Geneformer: %d of %d symbols have a token", len(pairs), len(names))
    return embedding_frame([s for s, _ in pairs], weight[[t for _, t in pairs]])


# --- scGPT: the gene encoder's embedding of each vocabulary gene ------------------------------------------------

SCGPT_KEY = "encoder.embedding.weight"


def scgpt_embeddings(
    weights: str | os.PathLike, vocab: str | os.PathLike, args: str | os.PathLike
) -> pd.DataFrame:
    """(G, embsize) rows of scGPT's gene encoder embedding (`encoder.embedding.weight`) for each vocabulary gene.

    The checkpoint is a torch state dict (read with torch alone: the scgpt package is not needed); special tokens
    (`<pad>`, `<cls>`, `<eoc>`, ...) are left out. `args.json`'s `embsize` must match the table's width.
    """
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    if SCGPT_KEY not in state:
        raise PertcalInputError(f"scGPT checkpoint {weights}: no {SCGPT_KEY!r} (keys: {', '.join(list(state)[:5])}, ...)")
    table = state[SCGPT_KEY].float().numpy()
    width = json.loads(Path(args).read_text()).get("embsize")
    if width is not None and width != table.shape[1]:
        raise PertcalInputError(f"scGPT: {args} says embsize {width} but {weights} has {table.shape[1]} columns")
    index = json.loads(Path(vocab).read_text())
    genes = sorted((g, int(i)) for g, i in index.items() if not (g.startswith("<") and g.endswith(">")))
    bad = [i for _, i in genes if not 0 <= i < table.shape[0]]
    if bad:
        raise PertcalInputError(f"scGPT {vocab}: index {bad[0]} is outside the embedding table of {table.shape[0]} rows")
    return embedding_frame([g for g, _ in genes], table[[i for _, i in genes]])


# --- GenePT: the published table, normalized ---------------------------------------------------------------------


def genept_embeddings(path: str | os.PathLike, *, member: str | None = None) -> pd.DataFrame:
    """(G, 1536) GenePT table from its pickle ({symbol: vector}), read directly or as `member` of the published zip."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if member is None or n == member or n.endswith("/" + member)]
            if len(names) != 1:
                raise PertcalInputError(f"GenePT archive {path}: member {member!r} matches {len(names)} files")
            obj = pickle.loads(zf.read(names[0]))
    else:
        obj = _pickle(path)
    if not isinstance(obj, dict) or not obj:
        raise PertcalInputError(f"GenePT {path}: expected a non-empty dict of gene symbol → vector")
    genes = sorted(obj)
    widths = {len(obj[g]) for g in genes}
    if len(widths) != 1:
        raise PertcalInputError(f"GenePT {path}: vectors of different lengths {sorted(widths)[:3]}")
    return embedding_frame(genes, np.stack([np.asarray(obj[g], dtype=np.float64) for g in genes]))


# --- coverage -------------------------------------------------------------------------------------------------


def coverage(perturbations, genes) -> float:
    """Fraction of `perturbations` whose every target gene has an embedding row (`genes`); those a model can encode."""
    have = set(map(str, genes))
    perts = list(perturbations)
    return sum(all(t in have for t in targets_of(p)) for p in perts) / len(perts) if perts else float("nan")


# --- one entry point per source (rule embed_genes) ------------------------------------------------------------

# The files (roles) each source reads; a checkpoint's files must share one directory, as the model hub lays them out.
SOURCE_FILES = {
    "esm2": ("config", "weights", "vocab", "proteome"),
    "geneformer": ("config", "weights", "token_dictionary", "gene_name_id"),
    "scgpt": ("weights", "vocab", "args"),
    "genept": ("table",),
}
CHECKPOINT_ROLES = ("config", "weights", "vocab")


def _checkpoint_dir(source: str, files: dict) -> Path:
    dirs = {Path(files[r]).parent for r in CHECKPOINT_ROLES if r in files}
    if len(dirs) != 1:
        raise PertcalInputError(
            f"embedding {source!r}: the checkpoint files ({', '.join(CHECKPOINT_ROLES)}) must lie in one directory, "
            f"got {sorted(map(str, dirs))}"
        )
    return dirs.pop()


def compute(source: str, files: dict[str, str], params: dict, device: str = "auto") -> pd.DataFrame:
    """The (G, K) gene embedding of `source` from its local `files` (role → path), `params` and torch `device`."""
    missing = [r for r in SOURCE_FILES[source] if r not in files]
    if missing:
        raise PertcalInputError(f"embedding {source!r}: config 'embeddings.{source}.files' lacks {', '.join(missing)}")
    if source == "esm2":
        from pertcal.models.training import pick_device

        checkpoint = _checkpoint_dir(source, files)
        return esm2_embeddings(checkpoint, read_proteome(files["proteome"]), device=str(pick_device(device)), **params)
    if source == "geneformer":
        return geneformer_embeddings(_checkpoint_dir(source, files), files["token_dictionary"], files["gene_name_id"])
    if source == "scgpt":
        return scgpt_embeddings(files["weights"], files["vocab"], files["args"])
    return genept_embeddings(files["table"], **params)
