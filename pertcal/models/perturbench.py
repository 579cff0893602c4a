"""PerturBench's simple baselines (Wu et al. 2024, section 3.3): linear additive, latent additive, decoder-only.

PerturBench learns one embedding per seen perturbation; here a perturbation's embedding is a learned linear map of
its target genes' embedding rows, summed over targets, so the same models also predict unseen perturbations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pertcal.models import embeddings
from pertcal.models.params import TRAINING, positive_int, with_defaults
from pertcal.models.training import EmbeddingModel, mlp, start_at

SHARED = {**with_defaults(TRAINING, epochs=100, batch_size=256, lr=1e-3), **embeddings.PARAMS}
NETWORK = {"hidden_dim": positive_int(512), "latent_dim": positive_int(64)}


class LinearAdditive(nn.Module):
    """control mean + Σ over target genes of (W · embedding row + b): a gene's effect is linear in its embedding."""

    def __init__(self, emb_dim: int, n_genes: int, control_mean: np.ndarray):
        super().__init__()
        self.effect = nn.Linear(emb_dim, n_genes)
        # start from "no effect" (the control), not from a random effect of every gene
        nn.init.zeros_(self.effect.weight)
        nn.init.zeros_(self.effect.bias)
        self.register_buffer("control", torch.as_tensor(control_mean, dtype=torch.float32))

    def forward(self, members, rows, basal=None):
        return self.control + members @ self.effect(rows)


class DecoderOnly(nn.Module):
    """decoder(Σ over target genes of A · embedding row): the perturbation embedding alone drives the decoder."""

    def __init__(self, emb_dim: int, n_genes: int, hidden_dim: int, latent_dim: int, cell_mean: np.ndarray):
        super().__init__()
        self.perturbation = nn.Linear(emb_dim, latent_dim)
        self.decoder = start_at(mlp([latent_dim, hidden_dim, hidden_dim, n_genes], nn.ReLU), cell_mean)

    def forward(self, members, rows, basal=None):
        return self.decoder(members @ self.perturbation(rows))


class LatentAdditive(nn.Module):
    """decoder(encoder(control cell) + Σ over target genes of A · embedding row): effects add in latent space."""

    def __init__(self, emb_dim: int, n_genes: int, hidden_dim: int, latent_dim: int, cell_mean: np.ndarray):
        super().__init__()
        self.encoder = mlp([n_genes, hidden_dim, hidden_dim, latent_dim], nn.ReLU)
        self.perturbation = nn.Linear(emb_dim, latent_dim)
        self.decoder = start_at(mlp([latent_dim, hidden_dim, hidden_dim, n_genes], nn.ReLU), cell_mean)

    def forward(self, members, rows, basal):
        return self.decoder(self.encoder(basal) + members @ self.perturbation(rows))


LINEAR_ADDITIVE = EmbeddingModel(
    params=SHARED,
    build=lambda p, n_genes, emb_dim, control, cells: LinearAdditive(emb_dim, n_genes, control),
    train_on_control=False,
    needs_basal=False,
)
DECODER_ONLY = EmbeddingModel(
    params={**SHARED, **NETWORK},
    build=lambda p, n_genes, emb_dim, control, cells: DecoderOnly(emb_dim, n_genes, p["hidden_dim"], p["latent_dim"],
                                                                  cells),
    train_on_control=True,
    needs_basal=False,
)
LATENT_ADDITIVE = EmbeddingModel(
    params={**SHARED, **NETWORK, "n_basal": positive_int(256)},
    build=lambda p, n_genes, emb_dim, control, cells: LatentAdditive(emb_dim, n_genes, p["hidden_dim"],
                                                                     p["latent_dim"], cells),
    train_on_control=True,
    needs_basal=True,
)
