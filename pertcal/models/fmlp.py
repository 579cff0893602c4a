"""fMLP: the foundation-embedding MLP probe (encoder of a gene embedding → 128-d latent → decoder to all genes).

Encoder emb→512→512→128 and decoder 128→512→512→genes with LeakyReLU(0.2); a combination sums its genes'
latents before decoding. Trained on the absolute log-normalised expression of each perturbed cell (control cells
are left out, as in the reference wrapper) with MSE, Adam lr 1e-3, batch 256, StepLR(30, 0.2), 100 epochs,
validation every 10 epochs picking the checkpoint. Unlike the reference wrapper, a training combination is encoded
from all its genes (the wrapper used only the first), the same sum that prediction uses, and the decoder's output
bias starts at the training cells' mean expression.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from torch import nn

from pertcal.models import embeddings
from pertcal.models.params import TRAINING, positive_int, with_defaults
from pertcal.models.training import EmbeddingModel, mlp, start_at

PARAMS = {
    **with_defaults(TRAINING, epochs=100, batch_size=256, lr=1e-3, lr_step=30, lr_gamma=0.2, val_every=10),
    **embeddings.PARAMS,
    "hidden_dim": positive_int(512),
    "latent_dim": positive_int(128),
}


class FMLP(nn.Module):
    """decoder(Σ over target genes of encoder(embedding row)) → (B, G) expression."""

    def __init__(self, emb_dim: int, n_genes: int, hidden_dim: int, latent_dim: int, cell_mean: np.ndarray):
        super().__init__()
        act = partial(nn.LeakyReLU, 0.2)
        self.encoder = mlp([emb_dim, hidden_dim, hidden_dim, latent_dim], act)
        self.decoder = start_at(mlp([latent_dim, hidden_dim, hidden_dim, n_genes], act), cell_mean)

    def forward(self, members, rows, basal=None):
        return self.decoder(members @ self.encoder(rows))


def build(params: dict, n_genes: int, emb_dim: int, control_mean, cell_mean) -> FMLP:
    return FMLP(emb_dim, n_genes, params["hidden_dim"], params["latent_dim"], cell_mean)


MODEL = EmbeddingModel(params=PARAMS, build=build, train_on_control=False, needs_basal=False)
