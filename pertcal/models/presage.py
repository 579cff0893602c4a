"""PRESAGE (Littman et al. 2025): several gene-embedding knowledge sources pooled with learned attention into a
perturbation representation that a linear map decodes into the expression change.

Written from the paper's description. Each knowledge source k is a gene × dims table; a target gene's row in it
goes through the source's own item encoder (an MLP to `item_hidden` units; binary tables, i.e. pathway/gene-set
memberships, through a narrower MLP of `pathway_item_layers` layers of `pathway_item_hidden` units). The sources a
gene has a row in are pooled by attention: a GAT-style score per source (LeakyReLU of a learned linear form of the
item), a softmax over the sources at temperature `temperature`; the pooled gene representation is
`gat_weight` · Σ_k α_k item_k + (1 − `gat_weight`) · Σ_k item_k (sum pooling). A combination sums its targets'
representations. A linear decoder maps the representation to the (G,) change of mean expression from the control
mean; training fits the train perturbations' mean changes (MSE, minibatches of perturbations) and stops early when
the validation perturbations' MSE has not improved for `patience` epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pertcal.harmonize import CONTROL, targets_of
from pertcal.io import PertcalInputError
from pertcal.models import embeddings
from pertcal.models.data import FoldCells
from pertcal.models.params import TRAINING, Implementation, Param, positive, positive_int, with_defaults
from pertcal.models.training import adam, descend, fallback, fit, leave_out, minibatches, mlp, seeded

BUILTIN = ("pca", "random")

PARAMS = {
    **with_defaults(TRAINING, epochs=1000, batch_size=32, lr=1e-3),
    "embeddings": Param(["pca"], (list,), lambda v: all(e in BUILTIN for e in v) and len(set(v)) == len(v),
                        f"must be a list of distinct names among {', '.join(BUILTIN)}"),
    "embedding_dim": embeddings.PARAMS["embedding_dim"],
    "embedding_files": Param([], (list,), lambda v: all(isinstance(f, str) for f in v),
                             "must be a list of table paths"),
    "item_hidden": positive_int(512),
    "pathway_item_hidden": positive_int(128),
    "pathway_item_layers": positive_int(2),
    "temperature": positive(0.15),
    "gat_weight": Param(0.85, (float,), lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "patience": positive_int(20),
}


def is_pathway(table: pd.DataFrame) -> bool:
    """A binary (0/1) table is a gene-set membership source, encoded by the narrower pathway item MLP."""
    values = table.to_numpy()
    return bool(np.isin(values, (0.0, 1.0)).all())


def standardise(table: pd.DataFrame) -> pd.DataFrame:
    """Dense sources scaled to unit RMS (sources differ in scale by orders of magnitude); binary ones left as is."""
    if is_pathway(table):
        return table
    rms = float(np.sqrt(np.mean(table.to_numpy() ** 2)))
    return table / rms if rms > 0 else table


class Presage(nn.Module):
    """Per-source item encoders, attention pooling over sources, sum over targets, linear decoder to (B, G)."""

    def __init__(self, dims: list[int], pathway: list[bool], n_genes: int, params: dict):
        super().__init__()
        h = params["item_hidden"]
        self.items = nn.ModuleList(
            mlp([d] + [params["pathway_item_hidden"]] * params["pathway_item_layers"] + [h], nn.ReLU) if pw
            else mlp([d, h, h], nn.ReLU)
            for d, pw in zip(dims, pathway)
        )
        self.score = nn.Linear(h, 1)
        self.decoder = nn.Linear(h, n_genes)
        nn.init.zeros_(self.decoder.weight)  # start at "no change": the control mean
        nn.init.zeros_(self.decoder.bias)
        self.temperature = params["temperature"]
        self.gat_weight = params["gat_weight"]

    def genes(self, rows: list[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(R, h) gene representations from each source's (R, d_k) rows; `present` (R, K) marks real rows."""
        items = torch.stack([enc(x) for enc, x in zip(self.items, rows)], dim=1) * present.unsqueeze(-1)  # (R, K, h)
        scores = nn.functional.leaky_relu(self.score(items).squeeze(-1), 0.2) / self.temperature
        alpha = torch.softmax(scores.masked_fill(present == 0, float("-inf")), dim=1)
        return self.gat_weight * (alpha.unsqueeze(-1) * items).sum(1) + (1 - self.gat_weight) * items.sum(1)

    def forward(self, members, rows, present):
        """members (B, R) target indicators → (B, G) predicted change from the control mean."""
        return self.decoder(members @ self.genes(rows, present))


def _sources(params: dict, pseudobulk: np.ndarray, genes: pd.Index, *, where: str) -> list[pd.DataFrame]:
    """The knowledge-source tables: the built-in ones named in `embeddings`, then each of `embedding_files`."""
    tables = [embeddings.gene_embedding({**params, "embedding": name}, pseudobulk, genes, where=where)
              for name in params["embeddings"]]
    tables += [embeddings.read_embedding(path, where=where) for path in params["embedding_files"]]
    return [standardise(t) for t in tables]


def encode(perturbations: list[str], tables: list[pd.DataFrame]):
    """(members (P, R), per-source rows [(R, d_k)], present (R, K), ok (P,)): a perturbation is encodable when each
    of its targets has a row in at least one source; a gene's missing sources are zero rows marked absent."""
    known = set().union(*(t.index for t in tables))
    tgt = [targets_of(p) for p in perturbations]
    ok = np.array([all(g in known for g in t) for t in tgt], dtype=bool)
    used = sorted({g for t, good in zip(tgt, ok) if good for g in t})
    col = {g: j for j, g in enumerate(used)}
    members = np.zeros((len(perturbations), len(used)), dtype=np.float32)
    for i, (t, good) in enumerate(zip(tgt, ok)):
        for g in t if good else ():
            members[i, col[g]] += 1.0
    rows = [t.reindex(used).fillna(0.0).to_numpy(dtype=np.float32) for t in tables]
    present = np.array([[g in t.index for t in tables] for g in used], dtype=np.float32).reshape(len(used), len(tables))
    return members, rows, present, ok


@dataclass(frozen=True)
class PresageModel(Implementation):
    files = ("embedding_files",)

    def check(self, given: dict, params: dict, *, where: str) -> dict:
        if not params["embeddings"] and not params["embedding_files"]:
            raise PertcalInputError(f"{where}: hyperparameters 'embeddings' and 'embedding_files' are both empty; "
                                    "PRESAGE needs at least one knowledge source")
        return params

    @staticmethod
    def _tensors(members, rows, present, device):
        to = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        return to(members), [to(r) for r in rows], to(present)

    def train(self, fold: FoldCells, params: dict, device: torch.device, *, where: str) -> tuple[dict, pd.DataFrame]:
        """Fit the train perturbations' mean changes from the control mean; early-stop on the val perturbations."""
        tables = _sources(params, fold.means(fold.train), fold.genes, where=where)
        labels = fold.train + fold.val
        members, rows, present, ok = encode(labels, tables)
        leave_out(labels, ok, reason="have a target in no knowledge source")
        train = np.flatnonzero(ok[: len(fold.train)])
        val = len(fold.train) + np.flatnonzero(ok[len(fold.train) :])
        if not train.size:
            raise PertcalInputError(f"{where}: no training perturbation has all its targets in a knowledge source")
        control_mean = fold.means([CONTROL])[0]
        delta = torch.as_tensor(fold.means(labels) - control_mean, dtype=torch.float32, device=device)
        members_t, rows_t, present_t = self._tensors(members, rows, present, device)
        rng = np.random.default_rng(params["seed"])
        with seeded(params["seed"]):
            net = Presage([t.shape[1] for t in tables], [is_pathway(t) for t in tables], fold.genes.size,
                          params).to(device)
            opt = adam(net.parameters(), params)

            def loss_of(perturbations: np.ndarray) -> torch.Tensor:
                idx = torch.as_tensor(perturbations, device=device)
                return nn.functional.mse_loss(net(members_t[idx], rows_t, present_t), delta[idx])

            best_state, curve = fit(net, lambda batch: (descend(opt, loss_of(batch)), batch.size),
                                    lambda: minibatches(train, params["batch_size"], rng),
                                    (lambda: loss_of(val).item()) if val.size else None, params, optimizers=[opt],
                                    patience=params["patience"])
        checkpoint = {
            "state_dict": best_state,
            "sources": [torch.from_numpy(t.to_numpy(dtype=np.float32)) for t in tables],
            "source_genes": [t.index.tolist() for t in tables],
            "control_mean": torch.from_numpy(control_mean),
            "genes": fold.genes.tolist(),
        }
        return checkpoint, curve

    def predict(self, checkpoint: dict, fold: FoldCells, params: dict, device: torch.device) -> pd.DataFrame:
        """(test perturbations, G): control mean + decoded sum of the targets' pooled representations."""
        tables = [pd.DataFrame(t.numpy(), index=g) for t, g in zip(checkpoint["sources"], checkpoint["source_genes"])]
        members, rows, present, ok = encode(fold.test, tables)
        out = np.zeros((len(fold.test), fold.genes.size))
        with seeded(params["seed"]):
            net = Presage([t.shape[1] for t in tables], [is_pathway(t) for t in tables], fold.genes.size, params)
            net.load_state_dict(checkpoint["state_dict"])
            net.to(device).eval()
            members_t, rows_t, present_t = self._tensors(members, rows, present, device)
            with torch.no_grad():
                if ok.any():
                    change = net(members_t[torch.as_tensor(ok, device=device)], rows_t, present_t)
                    out[ok] = checkpoint["control_mean"].numpy() + change.double().cpu().numpy()
        return fallback(out, ok, fold, reason="have a target gene in no knowledge source")


MODEL = PresageModel(params=PARAMS)
