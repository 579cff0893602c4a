"""scGPT fine-tuned for perturbation prediction (Cui et al. 2024), implemented here with scGPT's module layout.

The `scgpt` package cannot be installed beside pertcal's pins, so the perturbation architecture of its
`TransformerGenerator` is rebuilt from torch modules under the same attribute names, which makes the published
state dict load into it: per gene token, gene embedding (`encoder`) + value encoding of the control cell's
expression (`value_encoder`) + perturbation flag embedding (`pert_encoder`: 0 not perturbed, 1 perturbed, 2 pad),
batch-normalised (`bn`), a post-norm transformer encoder (`transformer_encoder`), and an MLP per token
(`decoder`) that predicts the perturbed expression of that gene. A combination flags all its target genes.

Training pairs each train cell (perturbed or control) with a random control cell, as GEARS's data loader does for
scGPT's tutorial: the control cell's expression is the input, the cell's own expression the target, MSE over the
genes of the batch (all genes, zeros included, or `max_seq_len` of them sampled per batch, targets always kept).
Prediction is the mean over `n_control_samples` control cells of the output with every gene as a token.

With `checkpoint_dir` (a directory holding scGPT's `best_model.pt`, `vocab.json`, `args.json`), the architecture
comes from `args.json` and the weights under `load_prefixes` (the tutorial's encoder, value encoder and transformer)
are loaded from the published state dict; the flag embedding, batch norm and decoder start at random, as in the
tutorial. Without it the model trains from random initialisation over a vocabulary of the dataset's genes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from pertcal.harmonize import CONTROL, targets_of
from pertcal.io import PertcalInputError
from pertcal.models.data import FoldCells
from pertcal.models.params import TRAINING, Implementation, Param, positive_int, with_defaults
from pertcal.models.training import adam, descend, fallback, fit, leave_out, minibatches, seeded

log = logging.getLogger(__name__)

PAD_TOKEN = "<pad>"
PERT_PAD = 2  # flag index of padding tokens in scGPT's pert_encoder (0 = not perturbed, 1 = perturbed)
# scGPT's args.json keys for the architecture → ours
ARCH_KEYS = {"embsize": "embsize", "nheads": "nhead", "nlayers": "nlayers", "d_hid": "d_hid"}
CHECKPOINT_FILES = ("best_model.pt", "vocab.json", "args.json")

PARAMS = {
    **with_defaults(TRAINING, epochs=10, batch_size=32, lr=1e-4, lr_step=1, lr_gamma=0.9),
    "checkpoint_dir": Param(None, (str, type(None))),
    "load_prefixes": Param(["encoder", "value_encoder", "transformer_encoder"], (list,),
                           lambda v: all(isinstance(p, str) and p for p in v), "must be a list of key prefixes"),
    "embsize": positive_int(512),
    "nhead": positive_int(8),
    "nlayers": positive_int(12),
    "d_hid": positive_int(512),
    "dropout": Param(0.2, (float,), lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "max_seq_len": positive_int(1200),
    "amp": Param(True, (bool,)),
    "n_control_samples": positive_int(300),
}


class GeneEncoder(nn.Module):
    """Gene token → embedding row, layer-normalised (scGPT's GeneEncoder: `embedding`, `enc_norm`)."""

    def __init__(self, n_tokens: int, d: int, pad_id: int):
        super().__init__()
        self.embedding = nn.Embedding(n_tokens, d, padding_idx=pad_id)
        self.enc_norm = nn.LayerNorm(d)

    def forward(self, tokens):
        return self.enc_norm(self.embedding(tokens))


class ValueEncoder(nn.Module):
    """Expression value → vector: Linear(1, d), ReLU, Linear(d, d), LayerNorm, dropout; values clipped at 512."""

    def __init__(self, d: int, dropout: float, max_value: float = 512.0):
        super().__init__()
        self.linear1 = nn.Linear(1, d)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)
        self.max_value = max_value

    def forward(self, values):
        x = torch.clamp(values.unsqueeze(-1), max=self.max_value)
        return self.dropout(self.norm(self.linear2(self.activation(self.linear1(x)))))


class ExprDecoder(nn.Module):
    """Per-token expression head: `fc` = Linear(d, d), LeakyReLU, Linear(d, d), LeakyReLU, Linear(d, 1)."""

    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, d), nn.LeakyReLU(), nn.Linear(d, 1))

    def forward(self, h):
        return self.fc(h).squeeze(-1)


class ScGPTPerturbation(nn.Module):
    """(B, L) gene tokens, (B, L) control expression, (B, L) perturbation flags → (B, L) predicted expression."""

    def __init__(self, n_tokens: int, pad_id: int, embsize: int, nhead: int, nlayers: int, d_hid: int,
                 dropout: float):
        super().__init__()
        self.encoder = GeneEncoder(n_tokens, embsize, pad_id)
        self.value_encoder = ValueEncoder(embsize, dropout)
        self.pert_encoder = nn.Embedding(3, embsize, padding_idx=PERT_PAD)
        self.bn = nn.BatchNorm1d(embsize, eps=6.1e-5)
        layer = nn.TransformerEncoderLayer(embsize, nhead, d_hid, dropout, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, nlayers, enable_nested_tensor=False)
        self.decoder = ExprDecoder(embsize)
        # scGPT's init_weights: only the gene embedding is re-initialised
        nn.init.uniform_(self.encoder.embedding.weight, -0.1, 0.1)

    def forward(self, tokens, values, flags):
        h = self.encoder(tokens) + self.value_encoder(values) + self.pert_encoder(flags)
        h = self.bn(h.permute(0, 2, 1)).permute(0, 2, 1)
        return self.decoder(self.transformer_encoder(h))


def read_vocab_and_args(directory: str, *, where: str) -> tuple[dict, dict]:
    """(vocab gene → token, args) of a published scGPT checkpoint directory, checked without loading the weights."""
    root = Path(directory)
    missing = [name for name in CHECKPOINT_FILES if not (root / name).is_file()]
    if missing:
        raise PertcalInputError(f"{where}: checkpoint_dir {directory!r} lacks {', '.join(missing)}")
    try:
        vocab = json.loads((root / "vocab.json").read_text())
        args = json.loads((root / "args.json").read_text())
    except (OSError, ValueError) as exc:
        raise PertcalInputError(f"{where}: checkpoint_dir {directory!r}: vocab.json or args.json unreadable: {exc}") \
            from exc
    if PAD_TOKEN not in vocab:
        raise PertcalInputError(f"{where}: file {root / 'vocab.json'} has no {PAD_TOKEN!r} token")
    absent = [k for k in ARCH_KEYS if k not in args]
    if absent:
        raise PertcalInputError(f"{where}: file {root / 'args.json'} lacks the field {absent[0]!r}")
    return vocab, args


def read_pretrained(directory: str, *, where: str) -> tuple[dict, dict, dict]:
    """(state dict, vocab gene → token, args) of a published scGPT checkpoint directory; fails naming the file."""
    vocab, args = read_vocab_and_args(directory, where=where)
    try:
        state = torch.load(Path(directory) / "best_model.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise PertcalInputError(f"{where}: file {Path(directory) / 'best_model.pt'} cannot be read: {exc}") from exc
    return state, vocab, args


def published_keys(state: dict) -> dict:
    """The state dict under torch's attention names: scGPT's flash-attention `Wqkv.*` are torch's `in_proj_*`."""
    return {k.replace("Wqkv.", "in_proj_"): v for k, v in state.items()}


def load_published(net: nn.Module, state: dict, prefixes: list[str], *, source: str) -> list[str]:
    """Load the checkpoint's tensors under `prefixes` into `net`, strictly: every parameter of `net` under those
    prefixes must be in the checkpoint with the same shape and no checkpoint key under them may be left over."""
    state = published_keys(state)
    own = net.state_dict()
    wanted = {k for k in own if k.split(".")[0] in prefixes}
    given = {k: v for k, v in state.items() if k.split(".")[0] in prefixes}
    missing, unexpected = sorted(wanted - set(given)), sorted(set(given) - wanted)
    if missing or unexpected:
        raise PertcalInputError(
            f"file {source}: state dict does not match the scGPT perturbation model under {prefixes}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    wrong = [f"{k} {tuple(v.shape)} ≠ {tuple(own[k].shape)}" for k, v in given.items() if v.shape != own[k].shape]
    if wrong:
        raise PertcalInputError(f"file {source}: tensor shapes differ from the model's: {wrong[:5]}")
    net.load_state_dict({**own, **given}, strict=True)
    return sorted(given)


def _autocast(device: torch.device, enabled: bool):
    """Mixed precision on CUDA, as the paper's AMP training; a no-op on CPU (float32 keeps runs deterministic)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class _Batcher:
    """Builds (tokens, values, flags, targets) for cells paired with control cells, over a subset of genes."""

    fold: FoldCells
    gene_tokens: np.ndarray  # (G,) token of each gene of the dataset (pad where the vocabulary lacks it)
    target_index: dict  # perturbation → (n_targets,) gene positions
    device: torch.device

    def flags(self, perturbations, positions: np.ndarray) -> np.ndarray:
        """(B, len(positions)) 1 where the position is one of the row's target genes, else 0."""
        out = np.zeros((len(perturbations), positions.size), dtype=np.int64)
        where = {g: j for j, g in enumerate(positions)}
        for i, p in enumerate(perturbations):
            for g in self.target_index[p]:
                out[i, where[g]] = 1
        return out

    def positions(self, perturbations, max_len: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted gene positions of a batch: all genes, or `max_len` sampled with every target gene kept."""
        n = self.gene_tokens.size
        if n <= max_len:
            return np.arange(n)
        keep = np.unique(np.concatenate([self.target_index[p] for p in perturbations] + [np.zeros(0, int)]))
        rest = np.setdiff1d(np.arange(n), keep)
        extra = rng.choice(rest, max(max_len - keep.size, 0), replace=False)
        return np.sort(np.concatenate([keep, extra]).astype(np.int64))

    def tensors(self, basal_cells, perturbations, positions):
        tokens = np.broadcast_to(self.gene_tokens[positions], (len(perturbations), positions.size))
        values = self.fold.dense(basal_cells)[:, positions]
        t = lambda a, dtype: torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=self.device)  # noqa: E731
        return (t(tokens, torch.long), t(values, torch.float32),
                t(self.flags(perturbations, positions), torch.long))


@dataclass(frozen=True)
class ScGPTModel(Implementation):
    def check(self, given: dict, params: dict, *, where: str) -> dict:
        if params["checkpoint_dir"] is not None:
            read_vocab_and_args(params["checkpoint_dir"], where=where)  # refuse a bad directory before the data
        return params

    def _architecture(self, params: dict, genes: pd.Index, *, where: str):
        """(network, (G,) gene tokens, architecture, published state dict, its file): from `checkpoint_dir`, or a
        fresh network over a vocabulary of the dataset's genes (state dict and file None)."""
        if params["checkpoint_dir"] is None:
            config = {k: params[k] for k in ARCH_KEYS.values()} | {"n_tokens": genes.size + 1, "pad_id": genes.size}
            return self._build(config, params), np.arange(genes.size), config, None, None
        state, vocab, args = read_pretrained(params["checkpoint_dir"], where=where)
        config = {ours: int(args[theirs]) for theirs, ours in ARCH_KEYS.items()}
        config |= {"n_tokens": int(max(vocab.values())) + 1, "pad_id": int(vocab[PAD_TOKEN])}
        tokens = np.array([vocab.get(g, vocab[PAD_TOKEN]) for g in genes], dtype=np.int64)
        log.info("scGPT checkpoint %s: %s; %d of %d genes in its vocabulary (others get the pad token)",
                 params["checkpoint_dir"], config, int((tokens != config["pad_id"]).sum()), genes.size)
        return self._build(config, params), tokens, config, state, Path(params["checkpoint_dir"]) / "best_model.pt"

    @staticmethod
    def _build(config: dict, params: dict) -> ScGPTPerturbation:
        return ScGPTPerturbation(config["n_tokens"], config["pad_id"], config["embsize"], config["nhead"],
                                 config["nlayers"], config["d_hid"], params["dropout"])

    def train(self, fold: FoldCells, params: dict, device: torch.device, *, where: str) -> tuple[dict, pd.DataFrame]:
        """Fine-tune (or train from scratch) on train + control cells paired with control cells; select on val."""
        position = {g: i for i, g in enumerate(fold.genes)}
        labels = fold.train + fold.val + [CONTROL]
        ok = {p: all(g in position for g in targets_of(p)) for p in labels}
        leave_out(labels, ok.values(), reason="target a gene outside the data's genes")
        target_index = {p: np.array([position[g] for g in targets_of(p)], dtype=np.int64) for p in labels if ok[p]}
        usable = np.array([ok[p] for p in fold.perturbation])
        train_cells = np.flatnonzero(usable & np.isin(fold.perturbation, fold.train + [CONTROL]))
        val_cells = np.flatnonzero(usable & np.isin(fold.perturbation, fold.val))
        control = fold.control_cells
        size = params["batch_size"]
        rng = np.random.default_rng(params["seed"])
        with seeded(params["seed"]):
            net, tokens, config, state, source = self._architecture(params, fold.genes, where=where)
            loaded = load_published(net, state, params["load_prefixes"], source=str(source)) if state else []
            net.to(device)
            batcher = _Batcher(fold, tokens, target_index, device)

            def batch_loss(cells, draw):
                perts = fold.perturbation[cells]
                positions = batcher.positions(perts, params["max_seq_len"], draw)
                basal = draw.choice(control, cells.size)
                x = batcher.tensors(basal, perts, positions)
                y = torch.as_tensor(fold.dense(cells)[:, positions], device=device)
                with _autocast(device, params["amp"]):
                    out = net(*x)
                return nn.functional.mse_loss(out.float(), y)

            opt = adam(net.parameters(), params)
            scaler = torch.amp.GradScaler("cuda", enabled=params["amp"] and device.type == "cuda")

            def step(cells):
                # the tutorial clips the gradient norm at 1
                clip = lambda: nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # noqa: E731
                return descend(opt, batch_loss(cells, rng), clip=clip, scaler=scaler), cells.size

            def validate():
                draw = np.random.default_rng(params["seed"] + 1)  # the same pairs at every validation
                val_loss = 0.0
                for cells in minibatches(val_cells, size):
                    val_loss += batch_loss(cells, draw).item() * cells.size / val_cells.size
                return val_loss

            best_state, curve = fit(net, step, lambda: minibatches(train_cells, size, rng),
                                    validate if val_cells.size else None, params, optimizers=[opt])
        return {"state_dict": best_state, "config": config, "gene_tokens": torch.from_numpy(tokens),
                "loaded_keys": loaded, "genes": fold.genes.tolist()}, curve

    def predict(self, checkpoint: dict, fold: FoldCells, params: dict, device: torch.device) -> pd.DataFrame:
        """(test perturbations, G): mean over sampled control cells of the prediction with every gene as a token."""
        position = {g: i for i, g in enumerate(fold.genes)}
        ok = np.array([all(g in position for g in targets_of(p)) for p in fold.test], dtype=bool)
        target_index = {p: np.array([position[g] for g in targets_of(p)], dtype=np.int64)
                        for p, good in zip(fold.test, ok) if good}
        out = np.zeros((len(fold.test), fold.genes.size))
        with seeded(params["seed"]):
            net = self._build(checkpoint["config"], params)
            net.load_state_dict(checkpoint["state_dict"])
            net.to(device).eval()
            batcher = _Batcher(fold, checkpoint["gene_tokens"].numpy(), target_index, device)
            n = min(params["n_control_samples"], fold.control_cells.size)
            basal = np.sort(np.random.default_rng(params["seed"]).choice(fold.control_cells, n, replace=False))
            everything = np.arange(fold.genes.size)
            with torch.no_grad():
                for i in np.flatnonzero(ok):
                    total = np.zeros(fold.genes.size)
                    for s in range(0, n, params["batch_size"]):
                        cells = basal[s : s + params["batch_size"]]
                        x = batcher.tensors(cells, [fold.test[i]] * cells.size, everything)
                        with _autocast(device, params["amp"]):
                            total += net(*x).float().sum(dim=0).cpu().numpy()
                    out[i] = total / n
        return fallback(out, ok, fold, reason="target a gene outside the data's genes (no token to flag)")


MODEL = ScGPTModel(params=PARAMS)
