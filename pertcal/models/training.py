"""Shared machinery of the models: seeding, device choice, the one training loop every model runs (minibatch steps,
learning-rate schedule, validation-based checkpoint selection, early stopping), and train/predict for networks
conditioned on gene embeddings (fMLP and the PerturBench baselines)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn

from pertcal.harmonize import CONTROL
from pertcal.io import PertcalInputError
from pertcal.models import embeddings
from pertcal.models.data import FoldCells

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


def minibatches(items: np.ndarray, size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """`items` in consecutive slices of `size` (the last may be shorter), shuffled by `rng` first when given."""
    order = items if rng is None else rng.permutation(items)
    return [order[start : start + size] for start in range(0, order.size, size)]


def adam(parameters, params: dict, *, weight_decay: float | None = None) -> torch.optim.Adam:
    """Adam at the hyperparameters' `lr` and `weight_decay` (or the `weight_decay` given)."""
    decay = params["weight_decay"] if weight_decay is None else weight_decay
    return torch.optim.Adam(parameters, lr=params["lr"], weight_decay=decay)


# a disabled scaler passes the loss, the unscaling and the step through unchanged
_UNSCALED = torch.amp.GradScaler("cuda", enabled=False)


def descend(opt: torch.optim.Optimizer, loss: torch.Tensor, *, clip: Callable[[], object] | None = None,
            scaler: torch.amp.GradScaler = _UNSCALED) -> float:
    """One step of `opt` down `loss`: clear the gradients, backpropagate (through `scaler` under mixed precision),
    `clip()` them, step; returns the loss's value."""
    opt.zero_grad()
    scaler.scale(loss).backward()
    scaler.unscale_(opt)  # clipping must see the true gradients
    if clip is not None:
        clip()
    scaler.step(opt)
    scaler.update()
    return loss.item()


def fit(
    net: nn.Module,
    step: Callable[[Any], tuple[float, int]],
    batches: Callable[[], Iterable],
    validate: Callable[[], float | tuple[float, ...]] | None,
    params: dict,
    *,
    optimizers: list[torch.optim.Optimizer],
    patience: int | None = None,
    extra_columns: tuple[str, ...] = (),
) -> tuple[dict, pd.DataFrame]:
    """The training loop of every model; keeps the weights with the lowest validation loss.

    Each epoch runs `step(batch)` on every minibatch of `batches()`: one optimisation step, returning the batch's
    mean loss and its weight (e.g. its number of cells); then every optimizer's learning rate follows
    StepLR(`lr_step`, `lr_gamma`) when `lr_step` > 0. `validate()` runs in eval mode without gradients every
    `val_every` epochs and at the last, returning the validation loss or a tuple (loss, values of `extra_columns`);
    without it (None) the last epoch's weights are kept. With `patience`, training stops once the loss has not
    improved for that many epochs. Returns (best state_dict on CPU, curve: CURVE_COLUMNS + extra_columns by epoch).
    """
    scheds = [torch.optim.lr_scheduler.StepLR(o, params["lr_step"], params["lr_gamma"]) for o in optimizers] \
        if params["lr_step"] else []
    last = params["epochs"]
    best, best_state, rows, waited = np.inf, None, [], 0
    for epoch in range(1, last + 1):
        net.train()
        total, n = 0.0, 0
        for batch in batches():
            loss, weight = step(batch)
            total, n = total + loss * weight, n + weight
        for sched in scheds:
            sched.step()
        scores = (np.nan,) * (1 + len(extra_columns))
        if validate is not None and (epoch % params["val_every"] == 0 or epoch == last):
            net.eval()
            with torch.no_grad():
                scores = validate()
            scores = scores if isinstance(scores, tuple) else (scores,)
        val_loss = scores[0]
        rows.append([epoch, total / n if n else np.nan, val_loss, False, *scores[1:]])
        log.info("epoch %d train_loss %.5f val_loss %.5f%s", epoch, rows[-1][1], val_loss,
                 "".join(f" {name} {value:.5f}" for name, value in zip(extra_columns, scores[1:])))
        if val_loss < best or (validate is None and epoch == last):
            best, best_state, waited = val_loss, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}, 0
        elif not np.isnan(val_loss):
            waited += params["val_every"]
            if patience is not None and waited >= patience:
                log.info("early stop at epoch %d: no val improvement in %d epochs", epoch, waited)
                break
    curve = pd.DataFrame(rows, columns=[*CURVE_COLUMNS, *extra_columns])
    curve.loc[int(np.nanargmin(curve["val_loss"])) if validate is not None else len(curve) - 1, "selected"] = True
    return best_state, curve


def leave_out(labels: list[str], ok, *, reason: str) -> None:
    """Log the train/val perturbations a model cannot represent (`ok` False; `reason` says why): training skips them."""
    dropped = [p for p, good in zip(labels, ok) if not good]
    if dropped:
        log.warning("%d train/val perturbations %s and are left out: %s", len(dropped), reason,
                    ", ".join(dropped[:20]))


def fallback(out: np.ndarray, ok: np.ndarray, fold: FoldCells, *, reason: str) -> pd.DataFrame:
    """(test perturbations, G) predictions `out`, where rows of perturbations the model cannot encode (`ok` False)
    get the mean baseline (mean of the train perturbations' means)."""
    pred = pd.DataFrame(out, index=fold.test, columns=fold.genes)
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
    leave_out(labels, ok, reason="have a target without embedding")
    return table, labels, members, rows, ok


@dataclass(frozen=True)
class EmbeddingModel(embeddings.EmbeddingImplementation):
    """A torch model whose perturbation input is the sum over its target genes of gene-embedding rows.

    `build(params, n_genes, emb_dim, control_mean, cell_mean)` returns a module called as `net(members, rows, basal)`
    with members (B, R) target indicators, rows (R, K) embedding rows and basal (B, G) control cells (or None)
    → (B, G); `control_mean` and `cell_mean` (G,) are the control cells' and the training cells' mean expression.
    """

    build: Callable[[dict, int, int, np.ndarray, np.ndarray], nn.Module]
    train_on_control: bool
    needs_basal: bool

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
        size = params["batch_size"]

        def batch_loss(cells: np.ndarray) -> torch.Tensor:
            basal = None
            if self.needs_basal:
                # each cell is paired with a random control cell as its unperturbed state (PerturBench)
                basal = torch.from_numpy(fold.dense(rng.choice(control_cells, cells.size))).to(device)
            y = torch.from_numpy(fold.dense(cells)).to(device)
            return nn.functional.mse_loss(net(members_t[code[cells]], rows_t, basal), y)

        def validate() -> float:
            return sum(batch_loss(c).item() * c.size for c in minibatches(val_cells, size)) / val_cells.size

        with seeded(params["seed"]):
            cell_mean = np.asarray(fold.x[train_cells].mean(axis=0)).ravel()
            net = self.build(params, fold.genes.size, table.shape[1], fold.means([CONTROL])[0], cell_mean).to(device)
            opt = adam(net.parameters(), params)
            state, curve = fit(net, lambda cells: (descend(opt, batch_loss(cells)), cells.size),
                               lambda: minibatches(train_cells, size, rng), validate if val_cells.size else None,
                               params, optimizers=[opt])
        checkpoint = {
            "state_dict": state,
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
        return fallback(out, ok, fold, reason="have a target gene without embedding")
