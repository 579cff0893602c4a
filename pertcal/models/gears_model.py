"""GEARS (Roohani et al. 2023) through the `cell-gears` package, fully offline.

GEARS needs a gene → GO-term map (`gene2go_all.pkl`). It is read from the local file named by `gene2go_path`
and written into GEARS's scratch data path before `PertData` is created, and the perturbation graph is built with
`default_pert_graph=False`, so GEARS finds everything locally and never downloads. The GO similarity graph is
computed here with GEARS's own Jaccard edge function (its `make_GO` reads and writes a path relative to the working
directory and starts 25 processes). The training loop mirrors `GEARS.train` (Adam with weight decay, StepLR(1, 0.5),
gradient clipping at 1, checkpoint = lowest validation MSE on the top-20 DE genes) so that each epoch's losses can be
recorded. Perturbations with a target gene outside the GO map cannot be represented by GEARS: they are left out of
training and, at prediction, get the mean of the training perturbations' means (logged).
"""

from __future__ import annotations

import pickle
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from pertcal.harmonize import CONTROL, targets_of
from pertcal.io import PertcalInputError
from pertcal.models.data import FoldCells
from pertcal.models.params import TRAINING, Implementation, Param, context, non_negative, positive_int, with_defaults
from pertcal.models.training import adam, descend, fallback, fit, leave_out, seeded

GEARS_CONTROL = "ctrl"
SCRATCH_NAME = "pertcal"

PARAMS = {
    "gene2go_path": Param(None, (str,)),  # required: validate() says so before the type check
    "hidden_size": positive_int(64),
    "num_go_gnn_layers": positive_int(1),
    "num_gene_gnn_layers": positive_int(1),
    "decoder_hidden_size": positive_int(16),
    "num_similar_genes_go_graph": positive_int(20),
    "num_similar_genes_co_express_graph": positive_int(20),
    "coexpress_threshold": Param(0.4, (float,), lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "uncertainty": Param(False, (bool,)),
    "uncertainty_reg": non_negative(1.0),
    "direction_lambda": non_negative(0.1),
    **with_defaults({k: TRAINING[k] for k in ("epochs", "lr", "weight_decay", "batch_size", "seed")},
                    epochs=10, weight_decay=5e-4, batch_size=32),
    "test_batch_size": positive_int(512),
    "n_control_samples": positive_int(300),
}
FILES = ("gene2go_path",)
# GEARS.train's schedule, not configurable: halve the learning rate and validate every epoch
SCHEDULE = {"lr_step": 1, "lr_gamma": 0.5, "val_every": 1}


def _import_gears() -> None:
    """Import cell-gears with a placeholder for dcor, which it imports only for `get_coeffs` (its genetic-interaction
    analysis, never called here): dcor compiles numba kernels at every import, ≈ 10 CPU-s, a quarter of a demo
    GEARS job. The placeholder leaves sys.modules right after, so a later `import dcor` loads the real package."""
    if "gears" in sys.modules or "dcor" in sys.modules:
        return
    placeholder = types.ModuleType("dcor")

    def distance_correlation(*args, **kwargs):
        raise RuntimeError("pertcal imported cell-gears without dcor; import dcor before gears to use get_coeffs")

    placeholder.distance_correlation = distance_correlation
    sys.modules["dcor"] = placeholder
    try:
        import gears  # noqa: F401  (gears.utils binds the placeholder's distance_correlation)
    finally:
        del sys.modules["dcor"]


def gears_condition(perturbation: str) -> str:
    """pertcal label → GEARS condition: control → 'ctrl', single G → 'G+ctrl', combination 'A+B' stays."""
    genes = targets_of(perturbation)
    if not genes:
        return GEARS_CONTROL
    return f"{genes[0]}+{GEARS_CONTROL}" if len(genes) == 1 else "+".join(genes)


def read_gene2go(path: str, *, where: str) -> dict[str, set]:
    """The pickled gene → GO-term map, as sets; genes with no term are dropped (they would have no GO edge)."""
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as exc:
        raise PertcalInputError(f"{where}: gene2go_path {path!r} is not a readable pickle: {exc}") from exc
    if not isinstance(raw, dict):
        raise PertcalInputError(
            f"{where}: gene2go_path {path!r} must hold a dict gene → GO terms, got {type(raw).__name__}"
        )
    return {str(g): set(terms) for g, terms in raw.items() if len(terms)}


def random_gene2go(genes, *, n_terms: int, terms_per_gene: int, seed: int) -> dict[str, set]:
    """A synthetic gene → GO-term map (each gene in `terms_per_gene` of `n_terms` random terms), for simulated data.

    It carries no biology: GEARS's GO graph is then uninformative, which is what a simulated screen has to offer.
    """
    rng = np.random.default_rng(seed)
    k = min(terms_per_gene, n_terms)
    return {str(g): {f"GO:{t:07d}" for t in rng.choice(n_terms, k, replace=False)} for g in genes}


def go_graph(gene2go: dict[str, set], pert_list: list[str], k: int) -> pd.DataFrame:
    """GO edges among `pert_list` as GEARS builds them: Jaccard > 0.1, then each target's k + 1 strongest sources."""
    from gears.utils import get_GO_edge_list

    sub = {g: gene2go[g] for g in pert_list}
    edges = [e for g in pert_list for e in get_GO_edge_list((g, sub))]
    table = pd.DataFrame(edges, columns=["source", "target", "importance"])
    table = table.sort_values(["target", "importance"], ascending=[True, False], kind="stable")
    return table.groupby("target", sort=False).head(k + 1).reset_index(drop=True)


def _gears_adata(fold: FoldCells, keep: np.ndarray) -> ad.AnnData:
    """Cells `keep` in GEARS's input form: obs condition and cell_type, var gene_name, X CSR log1p."""
    obs = pd.DataFrame(
        {"condition": [gears_condition(p) for p in fold.perturbation[keep]], "cell_type": "NOTHING"},
        index=[f"c{i}" for i in keep],
    )
    var = pd.DataFrame({"gene_name": fold.genes.to_numpy()}, index=fold.genes)
    return ad.AnnData(X=fold.x[keep], obs=obs, var=var)


class _SeriesMaskCSR(sp.csr_matrix):
    """CSR accepting a pandas boolean Series as row mask: cell-gears 0.1.2 indexes X so, current scipy refuses it."""

    def __getitem__(self, key):
        return super().__getitem__(key.to_numpy() if isinstance(key, pd.Series) else key)


class _ControlRows:
    """Control cells as plain CSR rows, indexable like the AnnData GEARS draws them from (`ctrl[rows, :].X`)."""

    def __init__(self, x: sp.csr_matrix):
        self.X = x

    def __len__(self) -> int:
        return self.X.shape[0]

    def __getitem__(self, key):
        return _ControlRows(self.X[key[0]])


def _fast_pert_data(pert_data_class):
    """cell-gears's PertData, but pairing perturbed cells with control cells from CSR rows instead of AnnData views.

    GEARS draws one random control cell per perturbed cell by slicing an AnnData view, milliseconds each; the
    draws (np.random.randint over the same control cells) and the graphs built from them are unchanged.
    """

    class FastPertData(pert_data_class):
        def create_dataset_file(self):
            self.ctrl_adata = _ControlRows(sp.csr_matrix(self.ctrl_adata.X))
            super().create_dataset_file()

    return FastPertData


def _in_sorted_order(loss, tensors: tuple, perts, **kwargs) -> torch.Tensor:
    """GEARS's loss (a mean over the batch's perturbations of per-perturbation terms), terms taken in sorted order.

    The library iterates a set of perturbation names, whose order follows Python's per-process hash seed, so the
    summation order and the last bits of every step would change from run to run.
    """
    perts = np.asarray(perts)
    terms = []
    for p in sorted(set(perts.tolist())):
        rows = np.flatnonzero(perts == p)
        index = torch.from_numpy(rows).to(tensors[0].device)
        terms.append(loss(*(t[index] for t in tensors), perts[rows], **kwargs))
    return torch.stack(terms).mean()


def _epoch_metrics(loader, model, uncertainty: bool, device) -> tuple[float, float]:
    """GEARS's validation numbers: (MSE over the top-20 DE genes, MSE over all genes), averaged over conditions."""
    from gears.inference import compute_metrics, evaluate

    metrics, _ = compute_metrics(evaluate(loader, model, uncertainty, device))
    return float(metrics["mse_de"]), float(metrics["mse"])


@dataclass(frozen=True)
class GearsModel(Implementation):
    files = FILES

    def validate(self, given: dict, *, model: str, dataset: str, source: str) -> dict:
        """As every model's, but a missing `gene2go_path` is named as such rather than as a wrong type."""
        if "gene2go_path" not in given:
            raise PertcalInputError(
                f"{context(model, dataset, source)}: hyperparameter 'gene2go_path' is required "
                "(a local gene2go pickle; GEARS never downloads it here)"
            )
        return super().validate(given, model=model, dataset=dataset, source=source)

    def train(self, fold: FoldCells, params: dict, device: torch.device, *, where: str) -> tuple[dict, pd.DataFrame]:
        """Fit GEARS on the fold's train (+ control) cells, select on val cells; returns (checkpoint, curve)."""
        if params["uncertainty"] and device.type != "cuda":
            # cell-gears sums its uncertainty loss into a leaf tensor in place: on CPU `.to(device)` keeps the leaf,
            # so autograd refuses it; on a GPU `.to` makes a copy and it trains
            raise PertcalInputError(f"{where}: GEARS with uncertainty: true trains on a GPU only (cell-gears's "
                                    "uncertainty loss fails on CPU); set uncertainty: false or run on a GPU")
        _import_gears()
        from gears import GEARS, PertData
        from gears.utils import GeneSimNetwork, loss_fct, uncertainty_loss_fct

        gene2go = read_gene2go(params["gene2go_path"], where=where)
        in_go = {p: all(g in gene2go for g in targets_of(p)) for p in fold.train + fold.val}
        leave_out(list(in_go), in_go.values(), reason="have a target outside gene2go")
        train = [p for p in fold.train if in_go[p]]
        val = [p for p in fold.val if in_go[p]]
        if not train:
            raise PertcalInputError(
                f"{where}: no training perturbation has all its targets in {params['gene2go_path']}"
            )
        keep = fold.cells_of(train + val + [CONTROL])
        with tempfile.TemporaryDirectory(prefix="pertcal-gears-") as scratch, seeded(params["seed"]):
            # PertData looks for exactly this file in its data path and downloads it only when absent
            with open(Path(scratch) / "gene2go_all.pkl", "wb") as f:
                pickle.dump(gene2go, f)
            pert_data = _fast_pert_data(PertData)(scratch, default_pert_graph=False)
            pert_data.new_data_process(dataset_name=SCRATCH_NAME, adata=_gears_adata(fold, keep))
            split_path = Path(scratch) / "split.pkl"
            with open(split_path, "wb") as f:
                pickle.dump({"train": [gears_condition(p) for p in train] + [GEARS_CONTROL],
                             "val": [gears_condition(p) for p in val]}, f)
            pert_data.prepare_split(split="custom", seed=params["seed"], split_dict_path=str(split_path))
            pert_data.split = "no_test"  # build train and val loaders only: test cells are never given to GEARS
            pert_data.get_dataloader(batch_size=params["batch_size"], test_batch_size=params["test_batch_size"])
            pert_data.adata.X = _SeriesMaskCSR(pert_data.adata.X)
            gears = GEARS(pert_data, device=str(device))
            pert_list = gears.pert_list
            go = GeneSimNetwork(go_graph(gene2go, pert_list, params["num_similar_genes_go_graph"]), pert_list,
                                node_map=pert_data.node_map_pert)
            gears.model_initialize(
                **{k: params[k] for k in ("hidden_size", "num_go_gnn_layers", "num_gene_gnn_layers",
                                          "decoder_hidden_size", "num_similar_genes_go_graph",
                                          "num_similar_genes_co_express_graph", "coexpress_threshold",
                                          "uncertainty", "uncertainty_reg", "direction_lambda")},
                G_go=go.edge_index, G_go_weight=go.edge_weight,
            )
            model, config = gears.model, gears.config
            optimizer = adam(model.parameters(), params)
            loaders = pert_data.dataloader
            common = dict(ctrl=gears.ctrl_expression, dict_filter=gears.dict_filter,
                          direction_lambda=config["direction_lambda"])

            def step(batch):
                batch.to(device)
                if config["uncertainty"]:
                    pred, logvar = model(batch)
                    loss = _in_sorted_order(uncertainty_loss_fct, (pred, logvar, batch.y), batch.pert,
                                            reg=config["uncertainty_reg"], **common)
                else:
                    loss = _in_sorted_order(loss_fct, (model(batch), batch.y), batch.pert, **common)
                clip = lambda: torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=1.0)  # noqa: E731
                return descend(optimizer, loss, clip=clip), batch.num_graphs

            best_state, curve = fit(
                model, step, lambda: loaders["train_loader"],
                (lambda: _epoch_metrics(loaders["val_loader"], model, config["uncertainty"], device)) if val else None,
                {**params, **SCHEDULE}, optimizers=[optimizer], extra_columns=("val_mse",),
            )
        config = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in config.items() if k != "device"}
        return {"state_dict": best_state, "config": config, "pert_list": list(pert_list),
                "genes": fold.genes.tolist()}, curve

    def predict(self, checkpoint: dict, fold: FoldCells, params: dict, device: torch.device) -> pd.DataFrame:
        """Mean GEARS prediction over sampled control cells for each test perturbation (GEARS.predict's recipe)."""
        _import_gears()
        from gears.model import GEARS_Model
        from gears.utils import create_cell_graph_for_prediction
        from torch_geometric.loader import DataLoader

        pert_list = checkpoint["pert_list"]
        position = {g: i for i, g in enumerate(pert_list)}
        ok = np.array([all(g in position for g in targets_of(p)) for p in fold.test], dtype=bool)
        out = np.zeros((len(fold.test), fold.genes.size))
        uncertain = bool(checkpoint["config"]["uncertainty"])  # the model then returns (prediction, log-variance)
        with seeded(params["seed"]):
            model = GEARS_Model({**checkpoint["config"], "device": device}).to(device)
            model.load_state_dict(checkpoint["state_dict"])
            model.eval()
            n = min(params["n_control_samples"], fold.control_cells.size)
            picked = np.random.default_rng(params["seed"]).choice(fold.control_cells, n, replace=False)
            basal = fold.dense(np.sort(picked))
            for i in np.flatnonzero(ok):
                genes = targets_of(fold.test[i])
                graphs = [create_cell_graph_for_prediction(x, [position[g] for g in genes], genes) for x in basal]
                preds = []
                with torch.no_grad():
                    for batch in DataLoader(graphs, batch_size=params["test_batch_size"], shuffle=False):
                        p = model(batch.to(device))
                        preds.append((p[0] if uncertain else p).cpu().numpy())
                out[i] = np.concatenate(preds).mean(axis=0)
        return fallback(out, ok, fold, reason="have a target gene outside the GO map (GEARS cannot represent them)")


MODEL = GearsModel(params=PARAMS)
