"""Shared machinery of the torch models: seeding, device choice, the minibatch loop with validation-based checkpoint
selection, and train/predict for networks conditioned on gene embeddings (fMLP and the PerturBench baselines)."""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError
from pertcal.models import embeddings
from pertcal.models.data import FoldCells
from pertcal.models.params import Param, resolve_params

log = logging.getLogger(__name__)

CURVE_COLUMNS = ["epoch", "train_loss", "val_loss", "selected"]


@contextmanager
def seeded(seed: int):
    """Run a block with torch's and NumPy's global generators seeded and deterministic algorithms on; restore after."""
    np_state = np.random.get_state()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
        torch.manual_seed(seed)
        np.random.seed(seed)
        # warn_only: a GPU op without a deterministic kernel (scatter sums in GEARS's graph layers) warns
        # instead of stopping the job; every CPU kernel used here is deterministic
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was_deterministic)
            np.random.set_state(np_state)


def pick_device(request: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; `cuda` without a GPU is an error rather than a silent CPU run."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if request == "cuda" and not torch.cuda.is_available():
        raise PertcalInputError("--device cuda was requested but no CUDA device is available")
    return torch.device(request)


def mlp(sizes: list[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Fully connected layers of the given sizes with `activation` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def start_at(layers: nn.Sequential, mean: np.ndarray) -> nn.Sequential:
    """Set the last layer's bias to `mean` (G,): an untrained network then predicts the mean expression, not 0."""
    with torch.no_grad():
        layers[-1].bias.copy_(torch.as_tensor(mean, dtype=torch.float32))
    return layers


def _batches(order: np.ndarray, size: int):
    for start in range(0, order.size, size):
        yield order[start : start + size]


def fit(
    net: nn.Module,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    train_cells: np.ndarray,
    val_cells: np.ndarray,
    params: dict,
    rng: np.random.Generator,
) -> tuple[dict, pd.DataFrame]:
    """Adam on minibatches of cells; keeps the weights with the lowest validation loss.

    `batch_loss(cells)` returns the mean loss over those cells. Validation runs every `val_every` epochs and at the
    last; without validation cells the last epoch's weights are kept. Returns (best state_dict, training curve).
    """
    opt = torch.optim.Adam(net.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    sched = torch.optim.lr_scheduler.StepLR(opt, params["lr_step"], params["lr_gamma"]) if params["lr_step"] else None
    best, best_state, rows = np.inf, None, []
    for epoch in range(1, params["epochs"] + 1):
        net.train()
        total = 0.0
        for cells in _batches(rng.permutation(train_cells), params["batch_size"]):
            opt.zero_grad()
            loss = batch_loss(cells)
            loss.backward()
            opt.step()
            total += loss.item() * cells.size
        if sched is not None:
            sched.step()
        val_loss = np.nan
        if val_cells.size and (epoch % params["val_every"] == 0 or epoch == params["epochs"]):
            net.eval()
            with torch.no_grad():
                val_loss = sum(batch_loss(c).item() * c.size for c in _batches(val_cells, params["batch_size"]))
            val_loss /= val_cells.size
        rows.append([epoch, total / train_cells.size, val_loss, False])
        if val_loss < best or (not val_cells.size and epoch == params["epochs"]):
            best, best_state = val_loss, copy.deepcopy(net.state_dict())
        log.info("epoch %d train_loss %.5f val_loss %.5f", epoch, rows[-1][1], val_loss)
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    chosen = int(np.nanargmin(curve["val_loss"])) if val_cells.size else len(curve) - 1
    curve.loc[chosen, "selected"] = True
    return best_state, curve


def fallback(pred: pd.DataFrame, ok: np.ndarray, fold: FoldCells, *, reason: str) -> pd.DataFrame:
    """Rows of perturbations a model cannot encode get the mean baseline (mean of the train perturbations' means)."""
    if not ok.all():
        missing = pred.index[~ok].tolist()
        log.warning("%d test perturbations %s; predicting the mean of the training perturbations for them: %s",
                    len(missing), reason, ", ".join(missing[:20]))
        pred.loc[~ok] = fold.mean_baseline[None, :]
    return pred


def encode_training_labels(fold: FoldCells, params: dict, *, where: str):
    """(table, labels, members, rows, ok) of the fold's train, val and control labels through the gene embedding;
    perturbations with a target lacking an embedding are logged (ok False) and left out by the caller."""
    table = embeddings.gene_embedding(params, fold.means(fold.train), fold.genes, where=where)
    labels = fold.train + fold.val + [CONTROL]
    members, rows, ok = embeddings.encode(labels, table)
    dropped = [p for p, good in zip(labels, ok) if not good]
    if dropped:
        log.warning("%d train/val perturbations have a target without embedding and are left out: %s",
                    len(dropped), ", ".join(dropped[:20]))
    return table, labels, members, rows, ok


@dataclass(frozen=True)
class EmbeddingModel:
    """A torch model whose perturbation input is the sum over its target genes of gene-embedding rows.

    `build(params, n_genes, emb_dim, control_mean, cell_mean)` returns a module called as `net(members, rows, basal)`
    with members (B, R) target indicators, rows (R, K) embedding rows and basal (B, G) control cells (or None)
    → (B, G); `control_mean` and `cell_mean` (G,) are the control cells' and the training cells' mean expression.
    """

    params: dict[str, Param]
    build: Callable[[dict, int, int, np.ndarray, np.ndarray], nn.Module]
    train_on_control: bool
    needs_basal: bool

    def validate(self, given: dict, *, model: str, dataset: str, source: str) -> dict:
        resolved = resolve_params(self.params, given, model=model, dataset=dataset, source=source,
                                  files=embeddings.FILES)
        where = f"model {model!r}, dataset {dataset!r}, file {source}"
        return embeddings.check_embedding_params(given, resolved, where=where)

    def train(self, fold: FoldCells, params: dict, device: torch.device, *, where: str) -> tuple[dict, pd.DataFrame]:
        """Fit on the fold's train cells (control too if the model uses it), select on val cells."""
        table, labels, members, rows, ok = encode_training_labels(fold, params, where=where)
        code = pd.Series(np.arange(len(labels)), index=labels)[fold.perturbation].to_numpy()
        usable = ok[code]
        in_train = np.isin(fold.perturbation, fold.train + ([CONTROL] if self.train_on_control else []))
        train_cells = np.flatnonzero(usable & in_train)
        val_cells = np.flatnonzero(usable & np.isin(fold.perturbation, fold.val))
        if not train_cells.size:
            raise PertcalInputError(f"{where}: no training perturbation has an embedding for all its target genes")
        control_cells = fold.control_cells
        rng = np.random.default_rng(params["seed"])
        members_t = torch.from_numpy(members).to(device)
        rows_t = torch.from_numpy(rows).to(device)

        def batch_loss(cells: np.ndarray) -> torch.Tensor:
            basal = None
            if self.needs_basal:
                # each cell is paired with a random control cell as its unperturbed state (PerturBench)
                basal = torch.from_numpy(fold.dense(rng.choice(control_cells, cells.size))).to(device)
            y = torch.from_numpy(fold.dense(cells)).to(device)
            return nn.functional.mse_loss(net(members_t[code[cells]], rows_t, basal), y)

        with seeded(params["seed"]):
            cell_mean = np.asarray(fold.x[train_cells].mean(axis=0)).ravel()
            net = self.build(params, fold.genes.size, table.shape[1], fold.means([CONTROL])[0], cell_mean).to(device)
            state, curve = fit(net, batch_loss, train_cells, val_cells, params, rng)
        checkpoint = {
            "state_dict": {k: v.cpu() for k, v in state.items()},
            "embedding": torch.from_numpy(table.to_numpy(dtype=np.float32)),
            "embedding_genes": table.index.tolist(),
            "genes": fold.genes.tolist(),
        }
        return checkpoint, curve

    def predict(self, checkpoint: dict, fold: FoldCells, params: dict, device: torch.device) -> pd.DataFrame:
        """(test perturbations, G) predicted mean log1p expression; unencodable perturbations get the mean baseline."""
        table = pd.DataFrame(checkpoint["embedding"].numpy(), index=checkpoint["embedding_genes"])
        members, rows, ok = embeddings.encode(fold.test, table)
        with seeded(params["seed"]):
            blank = np.zeros(fold.genes.size)  # the checkpoint's weights and buffers replace the starting values
            net = self.build(params, fold.genes.size, table.shape[1], blank, blank)
            net.load_state_dict(checkpoint["state_dict"])
            net.to(device).eval()
            members_t, rows_t = torch.from_numpy(members).to(device), torch.from_numpy(rows).to(device)
            encodable = torch.from_numpy(ok).to(device)
            out = np.zeros((len(fold.test), fold.genes.size))
            with torch.no_grad():
                if self.needs_basal:
                    n = min(params["n_basal"], fold.control_cells.size)
                    picked = np.random.default_rng(params["seed"]).choice(fold.control_cells, n, replace=False)
                    basal = torch.from_numpy(fold.dense(np.sort(picked))).to(device)
                    for i in np.flatnonzero(ok):
                        out[i] = net(members_t[i].expand(n, -1), rows_t, basal).mean(dim=0).cpu().numpy()
                else:
                    out[ok] = net(members_t[encodable], rows_t, None).cpu().numpy()
        pred = pd.DataFrame(out, index=fold.test, columns=fold.genes)
        return fallback(pred, ok, fold, reason="have a target gene without embedding")
