"""scLAMBDA (Wang et al. 2025): a disentangling VAE whose perturbation encoder reads gene embeddings.

Written from the paper's description. A cell's expression change from the control mean, x (G,), is encoded into a
basal latent z (a VAE encoder, G → hidden → hidden → 2·latent); the perturbation's embedding p (the sum of its
target genes' rows of one gene-embedding table; zeros for control) is encoded deterministically into a salient
latent s (emb → hidden → hidden → latent). The decoder reconstructs x from z + s, a second decoder reconstructs p
from s, and a MINE statistics network T(z, s) estimates the mutual information between z and s, which the model
is penalised for (λ_MI), so that z keeps the cell's basal state and s the perturbation. Training perturbs p
adversarially (p + ε‖p‖·sign ∇_p of the reconstruction loss) for robustness to embedding noise. A test
perturbation's prediction is the control mean plus the mean over control cells of decode(z_mean(cell) + s(p)).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd
import torch
from torch import nn

from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError
from pertcal.models import embeddings
from pertcal.models.data import FoldCells
from pertcal.models.params import TRAINING, non_negative, positive, positive_int, with_defaults
from pertcal.models.training import adam, descend, encode_training_labels, fallback, fit, minibatches, mlp, seeded

PARAMS = {
    **with_defaults(TRAINING, epochs=200, batch_size=500, lr=5e-4, lr_step=30, lr_gamma=0.2, val_every=10),
    **embeddings.PARAMS,
    "latent_dim": positive_int(30),
    "hidden_dim": positive_int(512),
    "lambda_mi": non_negative(200.0),
    "mine_weight_decay": non_negative(1e-4),
    "adversarial_eps": non_negative(1e-3),
    "grad_clip": positive(100.0),
    "n_val_cells": positive_int(300),
}

act = partial(nn.LeakyReLU, 0.2)


class ScLambda(nn.Module):
    """Encoders of x (VAE) and p (deterministic), decoders of x from z + s and of p from s, MINE network T(z, s)."""

    def __init__(self, n_genes: int, emb_dim: int, hidden: int, latent: int):
        super().__init__()
        self.encoder_x = mlp([n_genes, hidden, hidden, 2 * latent], act)
        self.encoder_p = mlp([emb_dim, hidden, hidden, latent], act)
        self.decoder_x = mlp([latent, hidden, hidden, n_genes], act)
        self.decoder_p = mlp([latent, hidden, hidden, emb_dim], act)
        self.mine = mlp([2 * latent, hidden, hidden, 1], act)
        self.latent = latent

    def encode_x(self, x):
        """(mean, log-variance) of z, each (B, latent)."""
        return self.encoder_x(x).split(self.latent, dim=1)

    def statistic(self, z, s):
        """MINE's T(z, s), clipped to ±50 so that exp(T) stays finite."""
        return torch.clamp(self.mine(torch.cat([z, s], dim=1)), -50.0, 50.0)

    def mi_estimate(self, z, s, s_marginal):
        """Donsker-Varadhan lower bound of I(z; s): E_joint T − log E_marginal exp T."""
        return self.statistic(z, s).mean() - torch.log(torch.exp(self.statistic(z, s_marginal)).mean())


def _correlations(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(P,) Pearson correlation of each row of `pred` with the same row of `truth` (0 where one row is constant)."""
    a = pred - pred.mean(axis=1, keepdims=True)
    b = truth - truth.mean(axis=1, keepdims=True)
    den = np.sqrt((a**2).sum(axis=1) * (b**2).sum(axis=1))
    return np.divide((a * b).sum(axis=1), den, out=np.zeros(len(a)), where=den > 0)


@dataclass(frozen=True)
class ScLambdaModel(embeddings.EmbeddingImplementation):
    @staticmethod
    def _build(params: dict, n_genes: int, emb_dim: int) -> ScLambda:
        return ScLambda(n_genes, emb_dim, params["hidden_dim"], params["latent_dim"])

    @staticmethod
    def _shifts(net: ScLambda, control_x: torch.Tensor, p: torch.Tensor, batch: int) -> np.ndarray:
        """(len(p), G) mean over control cells of decode(z_mean + s(p)): predicted changes from the control mean."""
        z = torch.cat([net.encode_x(control_x[s : s + batch])[0] for s in range(0, len(control_x), batch)])
        out = np.zeros((len(p), net.decoder_x[-1].out_features))
        for i in range(len(p)):
            s = net.encoder_p(p[i : i + 1])
            out[i] = net.decoder_x(z + s).mean(dim=0).cpu().numpy()
        return out

    def train(self, fold: FoldCells, params: dict, device: torch.device, *, where: str) -> tuple[dict, pd.DataFrame]:
        """Fit on the deltas of train and control cells; keep the epoch whose validation perturbations' predicted
        mean deltas correlate best with the observed ones (val_loss = 1 − mean Pearson r)."""
        table, labels, members, rows, ok = encode_training_labels(fold, params, where=where)
        pert_emb = members @ rows  # (P, K): a combination is the sum of all its targets' rows
        code = pd.Series(np.arange(len(labels)), index=labels)[fold.perturbation].to_numpy()
        usable = ok[code]
        train_cells = np.flatnonzero(usable & np.isin(fold.perturbation, fold.train + [CONTROL]))
        if not train_cells.size:
            raise PertcalInputError(f"{where}: no training perturbation has an embedding for all its target genes")
        val_perts = [p for p, good in zip(fold.val, ok[len(fold.train) :]) if good]
        control_mean = fold.means([CONTROL])[0].astype(np.float32)
        rng = np.random.default_rng(params["seed"])
        val_truth = fold.means(val_perts) - control_mean if val_perts else None
        n_val = min(params["n_val_cells"], fold.control_cells.size)
        val_controls = np.sort(rng.choice(fold.control_cells, n_val, replace=False))
        to = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        p_all = to(pert_emb)
        val_p = to(pert_emb[[labels.index(p) for p in val_perts]])
        with seeded(params["seed"]):
            net = self._build(params, fold.genes.size, table.shape[1]).to(device)
            main = [p for name, p in net.named_parameters() if not name.startswith("mine.")]
            opt = adam(main, params)
            opt_mine = adam(net.mine.parameters(), params, weight_decay=params["mine_weight_decay"])
            val_x = to(fold.dense(val_controls) - control_mean)

            def step(cells):
                x = to(fold.dense(cells) - control_mean)
                p = p_all[code[cells]]
                p_marginal = p_all[code[rng.choice(train_cells, cells.size)]]
                # adversarial embedding: one signed-gradient step of relative size ε on the reconstruction
                p_req = p.clone().requires_grad_(True)
                recon = 0.5 * ((net.decoder_x(net.encode_x(x)[0] + net.encoder_p(p_req)) - x) ** 2).sum(1).mean()
                grad, = torch.autograd.grad(recon, p_req)
                p_adv = p + params["adversarial_eps"] * p.norm(dim=1, keepdim=True) * torch.sign(grad)
                mean, log_var = net.encode_x(x)
                z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
                s = net.encoder_p(p_adv)
                s_marginal = net.encoder_p(p_marginal)
                # MINE ascends its bound on detached latents; the model then descends the bound
                descend(opt_mine, -net.mi_estimate(mean.detach(), s.detach(), s_marginal.detach()),
                        clip=lambda: nn.utils.clip_grad_norm_(net.mine.parameters(), params["grad_clip"]))
                loss = (0.5 * ((net.decoder_x(z + s) - x) ** 2).sum(1).mean()
                        + 0.5 * ((net.decoder_p(s) - p) ** 2).sum(1).mean()
                        - 0.5 * (1 + log_var - mean**2 - log_var.exp()).sum(1).mean()
                        + params["lambda_mi"] * net.mi_estimate(mean, s.detach(), s_marginal.detach()))
                return descend(opt, loss, clip=lambda: nn.utils.clip_grad_norm_(main, params["grad_clip"])), cells.size

            def validate():
                pred = self._shifts(net, val_x, val_p, params["batch_size"])
                return float(1.0 - _correlations(pred, val_truth).mean())

            best_state, curve = fit(net, step, lambda: minibatches(train_cells, params["batch_size"], rng),
                                    validate if val_perts else None, params, optimizers=[opt, opt_mine])
        checkpoint = {
            "state_dict": best_state,
            "embedding": torch.from_numpy(table.to_numpy(dtype=np.float32)),
            "embedding_genes": table.index.tolist(),
            "control_mean": torch.from_numpy(control_mean),
            "genes": fold.genes.tolist(),
        }
        return checkpoint, curve

    def predict(self, checkpoint: dict, fold: FoldCells, params: dict, device: torch.device) -> pd.DataFrame:
        """(test perturbations, G): control mean + mean over the control cells of the decoded z_mean + s(p)."""
        table = pd.DataFrame(checkpoint["embedding"].numpy(), index=checkpoint["embedding_genes"])
        members, rows, ok = embeddings.encode(fold.test, table)
        control_mean = checkpoint["control_mean"].numpy()
        out = np.zeros((len(fold.test), fold.genes.size))
        with seeded(params["seed"]):
            net = self._build(params, fold.genes.size, table.shape[1])
            net.load_state_dict(checkpoint["state_dict"])
            net.to(device).eval()
            to = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
            with torch.no_grad():
                x = to(fold.dense(fold.control_cells) - control_mean)
                out[ok] = control_mean + self._shifts(net, x, to((members @ rows)[ok]), params["batch_size"])
        return fallback(out, ok, fold, reason="have a target gene without embedding")


MODEL = ScLambdaModel(params=PARAMS)
